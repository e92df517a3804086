"""Names match whole (issue 23): a regex ``$`` also matches before a final newline."""

from __future__ import annotations

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import (
    kubeflow_tensorboard_url,
    validate_name,
    validate_trial,
)


@pytest.mark.parametrize("name", ["run\n", "run-1\n", "r.1\n"])
def test_a_name_ending_in_a_newline_is_refused(name: str) -> None:
    with pytest.raises(InputError, match=r"run name .*\\n.* is not allowed"):
        validate_name("run", name)


def test_a_trial_or_namespace_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(InputError, match="not a trial name"):
        validate_trial("trial-01\n")
    with pytest.raises(InputError, match="is not a Kubernetes name"):
        kubeflow_tensorboard_url("https://kf.example.com", "team\n", "board")


def test_a_huge_name_is_cut_in_the_error_line() -> None:
    with pytest.raises(InputError) as caught:
        validate_name("run", "x" * 10**6)
    assert len(str(caught.value)) < 300


def test_every_other_name_ending_in_a_newline_is_refused(tmp_path) -> None:
    """Registry aliases, InferenceService and Secret names, notify targets and Kubernetes
    quantities: each pattern ends at the end of the text, not before a final newline."""
    from tbpipe.components.notification.config import parse_target
    from tbpipe.components.promotion.inference_service import ServiceRef
    from tbpipe.components.promotion.publish import move_alias
    from tbpipe.pipelines.placement import PVC_NAME, SecretEnv, is_quantity

    with pytest.raises(InputError, match="an alias is"):
        move_alias(str(tmp_path / "registry"), "champion\n", "v1")
    with pytest.raises(InputError, match="--inference-service"):
        ServiceRef.parse("models/classifier\n")
    with pytest.raises(InputError, match="keys must be environment variable names"):
        SecretEnv.parse("creds:AWS_ACCESS_KEY_ID,KEY\nX")
    for target in ("env:TBPIPE_WEBHOOK_URL\n", "mailto:team@example.com\n"):
        with pytest.raises(InputError):
            parse_target(target)
    assert not is_quantity("cpu", "500m\n") and not is_quantity("memory", "4Gi\n")
    assert PVC_NAME.match("tb-logs\n") is None and PVC_NAME.match("tb-logs")
