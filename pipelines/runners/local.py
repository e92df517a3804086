"""Run the compiled pipeline locally with kfp.local (subprocess by default, docker too)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import warnings

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.naming import default_run_name
from tbpipe.pipelines.training import PipelineParams

RUNNERS = ("subprocess", "docker")
# Relative to the folder a run starts in; made absolute then (a compiled YAML holds neither).
DEFAULT_LOG_ROOT = os.path.join("tbpipe-runs", "logs")
DEFAULT_PIPELINE_ROOT = os.path.join("tbpipe-runs", "pipeline-root")
_STEP_ERROR = re.compile(r"tbpipe: ([\w.-]+): error: (.+)")


class _StepErrors:
    """A stdout that passes a run's output through and keeps the steps' own error lines.

    kfp.local prints each step's output line by line; a failed step's wrapper printed one
    ``tbpipe: <step>: error: ...`` line (tbpipe.components.common.errors.exit_on_error).
    """

    def __init__(self, out) -> None:  # noqa: ANN001 - a text stream
        self.out, self.errors, self._tail = out, [], ""

    def write(self, text: str) -> int:
        """Pass ``text`` on; remember every complete step error line."""
        self.out.write(text)
        *lines, self._tail = (self._tail + text).split("\n")
        self.errors += [m.groups() for m in map(_STEP_ERROR.search, lines) if m]
        return len(text)

    def flush(self) -> None:  # noqa: D102
        self.out.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.out, name)


@dataclasses.dataclass(frozen=True)
class LocalRunResult:
    """What a local run produced."""

    params: PipelineParams  # as run: log_root and run_name resolved
    summary: dict
    log_dir: str
    job_dir: str
    label: str


def init_runner(runner: str, pipeline_root: str, warm_worker: bool = True,
                **runner_options: object) -> None:
    """Initialise kfp.local with the named runner.

    The subprocess runner runs the steps in a warm worker (TensorFlow imported once, a fork
    per step: tbpipe.pipelines.runners.warm_worker) unless ``warm_worker`` is False, and as
    plain subprocesses when the worker cannot start.
    """
    from kfp import local

    from tbpipe.pipelines.runners.warm_worker import start_warm_worker, stop_warm_worker

    stop_warm_worker()
    if runner == "subprocess":
        chosen = local.SubprocessRunner(use_venv=False)
        if warm_worker:
            start_warm_worker()
    elif runner == "docker":
        from tbpipe.pipelines.runners.docker import docker_runner

        chosen = docker_runner(pipeline_root=pipeline_root, **runner_options)
    else:
        raise TbpipeError(f"unknown runner {runner!r}: use one of {', '.join(RUNNERS)}")
    local.init(runner=chosen, pipeline_root=pipeline_root, raise_on_error=True)


def check_sources(params: PipelineParams) -> None:
    """Fail before anything starts when a data location is missing or would block.

    Only files, folders and objects are read: a FIFO or a device is refused here.
    """
    from tbpipe.components.common.storage import exists, is_remote
    from tbpipe.components.preprocessing.source import check_regular
    from tbpipe.components.training.user_model import check_model_exists

    for flag, uri in (("--data", params.data), ("--finetune-data", params.finetune_data)):
        if not uri or uri.startswith("builtin:"):
            continue
        if not exists(uri):
            raise InputError(f"{flag} {uri}: no such file, folder or object; pass a CSV or "
                             "Parquet table, an MNIST IDX folder, or builtin:digits")
        if not is_remote(uri):
            check_regular(f"{flag} {uri}", uri)
    check_model_exists(params.model)


def claim_local_run(params: PipelineParams) -> str:
    """Claim the run's folder for this local run before kfp.local starts; its owner id.

    A run of that name that exists already (running now, interrupted or finished) is refused
    with one line, unless ``params.resume``.
    """
    import uuid

    from tbpipe.components.common.run_claim import claim_run

    owner = f"tbpipe-run-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    claim_run(params.log_root, params.experiment, params.run_name, owner, params.resume)
    return owner


def run_pipeline(params: PipelineParams, pipeline_root: str = DEFAULT_PIPELINE_ROOT,
                 runner: str = "subprocess", **runner_options: object) -> LocalRunResult:
    """Run the whole pipeline locally and return where everything went.

    Raises:
        TbpipeError: a step failed (its own error line was printed above).
    """
    from tbpipe.components.common.naming import step_log_dir
    from tbpipe.components.training.user_model import local_start_path
    from tbpipe.pipelines.placement import CompileOptions
    from tbpipe.pipelines.training import build_training_pipeline

    check_sources(params)
    params = dataclasses.replace(
        params.with_model_source(), model=local_start_path(params.model) or params.model,
        run_name=params.run_name or default_run_name(),
        log_root=params.log_root or os.path.abspath(DEFAULT_LOG_ROOT)).validate()
    pipeline_root = os.path.abspath(pipeline_root)
    claim_local_run(params)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    gpu = False
    if runner == "docker":
        from tbpipe.pipelines.runners.docker import docker_paths, gpus_usable

        runner_options = {**docker_paths(params), **runner_options}
        gpu = gpus_usable(runner_options.get("gpus"))
    init_runner(runner, pipeline_root, **runner_options)
    # train/finetune use the gpu image only when GPUs really pass through to the containers
    pipeline = build_training_pipeline(CompileOptions(gpu=gpu, retries=0))
    output = _StepErrors(sys.stdout)
    try:
        with contextlib.redirect_stdout(output), warnings.catch_warnings():
            # resources and display names are for the cluster; kfp.local warns per task
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner")
            # The run is this process's now: its steps continue it (each takes the claim
            # over for kfp.local's job) rather than refuse the claim made just above.
            task = pipeline(**{**params.as_arguments(), "resume": True})
    except RuntimeError as exc:
        if output.errors:  # repeat the step's own line: it names the input and what to do
            step, message = output.errors[-1]
            raise TbpipeError(f"step {step} failed: {message}") from exc
        raise TbpipeError(f"the pipeline failed: {str(exc).splitlines()[0]} "
                          "(the failing step's own error is printed above)") from exc
    summary = json.loads(task.output)
    run_dir = os.path.dirname(step_log_dir(params.log_root, params.experiment, params.run_name,
                                           "train"))
    job_dir = os.path.dirname(os.path.dirname(summary["model_uri"]))
    return LocalRunResult(params, summary, run_dir, job_dir,
                          f"{params.experiment}/{params.run_name}")
