"""Names that end up in paths: validated, and the one log layout every step shares."""

from __future__ import annotations

import re
import time

from components.common.errors import InputError
from components.common.storage import join

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
STEPS = ("preprocess", "train", "evaluate", "finetune", "evaluate-finetuned",
         "preprocess-finetune-data")


def validate_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe single path segment, else raise InputError.

    Args:
        kind: What the name is (``experiment``, ``run``), for the message.
        value: The user-supplied name.
    """
    if not _NAME.match(value or "") or ".." in value:
        raise InputError(
            f"{kind} name {value!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (no '/', no '..')"
        )
    return value


def default_run_name(now: float | None = None) -> str:
    """A timestamped run name, e.g. ``run-20261128-161230``."""
    return time.strftime("run-%Y%m%d-%H%M%S", time.localtime(now))


def step_log_dir(log_root: str, experiment: str, run: str, step: str) -> str:
    """``{log_root}/{experiment}/{run}/{step}``, with every segment validated."""
    for kind, value in (("experiment", experiment), ("run", run), ("step", step)):
        validate_name(kind, value)
    return join(log_root, experiment, run, step)


def resolve_run(run_name: str, job_name: str) -> str:
    """The run's name: the user's ``run_name`` if given, else the pipeline job's name."""
    return validate_name("run", run_name or job_name)
