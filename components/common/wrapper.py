"""What the steps' KFP wrappers share: where a step logs."""

from __future__ import annotations

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import resolve_run, step_log_dir


def step_place(log_root: str, experiment: str, run_name: str, job_name: str, step: str,
               output_uri: str) -> tuple[str, str]:
    """``(run, log_dir)`` of a step: its run's name and ``{log_root}/{experiment}/{run}/{step}``.

    Args:
        log_root: The shared TensorBoard root (a folder, ``gs://...``).
        experiment: The experiment folder.
        run_name: The run's name; empty: the KFP job's name (see ``resolve_run``).
        job_name: The KFP job's name (KFP's placeholder by default).
        step: The step's name.
        output_uri: One of the step's output artifacts' URIs (names the job as a fallback).

    """
    if not log_root:
        raise InputError("log_root is empty: pass the log root every step shares, a folder "
                         "or gs://BUCKET/PATH")
    run = resolve_run(run_name, job_name, output_uri)
    return run, step_log_dir(log_root, experiment, run, step)
