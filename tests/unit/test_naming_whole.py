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
