import os

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import (
    default_run_name,
    resolve_run,
    step_log_dir,
    validate_name,
)


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "/abs", "..", "a..b", ".hidden", "x" * 200])
def test_unsafe_names_are_refused(bad):
    with pytest.raises(InputError, match="not allowed"):
        validate_name("run", bad)


def test_step_log_dir_layout(tmp_path):
    path = step_log_dir(str(tmp_path), "exp", "run-1", "train")
    assert path == os.path.join(str(tmp_path), "exp", "run-1", "train")
    assert step_log_dir("gs://b/logs", "exp", "r", "evaluate") == "gs://b/logs/exp/r/evaluate"
    with pytest.raises(InputError):
        step_log_dir(str(tmp_path), "../etc", "r", "train")


def test_run_name_resolution():
    assert resolve_run("", "tbpipe-training-2026") == "tbpipe-training-2026"
    assert resolve_run("mine", "job") == "mine"
    assert default_run_name(0).startswith("run-19")
