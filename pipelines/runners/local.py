"""Run the compiled pipeline locally with kfp.local (subprocess by default, docker too)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import warnings

from tbpipe.components.common.errors import (
    TbpipeError,
    full_folders,
    log_tracebacks_to,
)
from tbpipe.components.common.naming import default_run_name
from tbpipe.components.selection.config import TuneConfig
from tbpipe.pipelines.sweep import Sweep
from tbpipe.pipelines.training import PipelineParams

RUNNERS = ("subprocess", "docker")
# Relative to the folder a run starts in; made absolute then (a compiled YAML holds neither).
DEFAULT_LOG_ROOT = os.path.join("tbpipe-runs", "logs")
DEFAULT_PIPELINE_ROOT = os.path.join("tbpipe-runs", "pipeline-root")
@dataclasses.dataclass(frozen=True)
class LocalRunResult:
    """What a local run produced."""

    params: PipelineParams  # as run: log_root and run_name resolved
    summary: dict
    log_dir: str
    job_dir: str
    label: str
    run_log: str = ""  # everything the run printed (the screen showed a summary of it)
    reports: dict = dataclasses.field(default_factory=dict)  # step display name -> report
    html_reports: dict = dataclasses.field(default_factory=dict)  # ... -> its HTML report


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


def resolved_for_local_run(params: PipelineParams) -> PipelineParams:
    """``params`` as a local run's steps take them, wherever they run (another folder, docker).

    The run name (default: timestamped) and the log root (default: ``./tbpipe-runs/logs``)
    resolved; a local ``--model`` file or folder and every parameter that names a local file
    or folder (``Param.local_path``) made absolute; a ``file.py`` model's text read.
    """
    from tbpipe.components.registry import param_table

    paths = {name: os.path.abspath(getattr(params, name))
             for name, param in param_table().items()
             if param.local_path and getattr(params, name) and "://" not in getattr(params, name)}
    return dataclasses.replace(
        params.with_model_source(), model=params.model.made_absolute(),
        run_name=params.run_name or default_run_name(),
        log_root=params.log_root or os.path.abspath(DEFAULT_LOG_ROOT), **paths).validate()


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


def tensorflow_log_level(environ: dict) -> None:
    """Set the steps' ``TF_CPP_MIN_LOG_LEVEL`` unless it is set: 2, or 3 without a GPU device.

    2 shows errors only. Without ``/dev/nvidia*``, TensorFlow's CUDA plugin logs ``E0000 ...
    failed call to cuInit`` in every step, even with ``CUDA_VISIBLE_DEVICES`` empty; where a
    GPU device exists, errors stay visible.
    """
    import glob

    if "TF_CPP_MIN_LOG_LEVEL" not in environ:
        environ["TF_CPP_MIN_LOG_LEVEL"] = "2" if glob.glob("/dev/nvidia[0-9]*") else "3"


def run_folders(pipeline_root: str, params: PipelineParams) -> dict[str, str]:
    """The local folders a run writes to, by what the user knows them as."""
    from tbpipe.components.common.errors import temporary_folder

    folders = {"the temporary folder (TMPDIR)": temporary_folder(),
               "the pipeline root (--pipeline-root)": pipeline_root,
               "the log root (--log-root)": params.log_root}
    return {label: path for label, path in folders.items() if "://" not in path}


def kfp_local_failed(output: object, exc: Exception, log_path: str) -> TbpipeError:
    """The one line for an error kfp.local raised itself (not a step's failure).

    kfp.local reads each step's outputs in this process, after it said the step succeeded: a
    metric it cannot serialize (NaN) fails there, with a traceback that names no step. The
    line names the step running or finished last (``output``: the run's
    :class:`~.run_display.RunDisplay`); the traceback goes to the run's log.
    """
    import re

    from tbpipe.components.common.errors import error_line, write_traceback

    step = output.step.name if output.step is not None else output.last_finished
    output.failed(log_path)
    output.flush()
    write_traceback(exc, "run")
    cause = error_line(exc)
    if not step:
        return TbpipeError(f"the pipeline failed in kfp.local ({cause}) (full log: {log_path})")
    hint = ("; a metric or output is not a finite number"
            if re.search(r"\b(nan|inf|infinity)\b", cause, re.IGNORECASE) else "")
    return TbpipeError(f"step {step} failed: kfp.local could not take its outputs "
                       f"({cause}){hint} (full log: {log_path})")


def run_log_path(pipeline_root: str, params: PipelineParams) -> str:
    """Where a local run's full output goes: ``{pipeline_root}/run-logs/{exp}/{run}.log``."""
    return os.path.join(pipeline_root, "run-logs", params.experiment, f"{params.run_name}.log")


def run_pipeline(params: PipelineParams, pipeline_root: str = DEFAULT_PIPELINE_ROOT,
                 runner: str = "subprocess", sweep: Sweep | TuneConfig | None = None,
                 verbose: bool = True, screen=None,  # noqa: ANN001
                 **runner_options: object) -> LocalRunResult:
    """Run the whole pipeline locally and return where everything went.

    ``sweep``: train its trials one after another (kfp.local), then go on with the best; a
    search (``--tune``) is then one trial a round, each suggested from every result before
    it, by the same suggest and select-tuned steps as on a cluster.
    Everything kfp.local and the steps print goes to the run's log file
    (:func:`run_log_path`); ``screen`` (default: stdout) shows one line per step as it
    starts and ends, and a progress bar on a terminal (:mod:`.run_display`), or, with
    ``verbose``, everything as it is printed.

    With ``params.notify``, the outcome (succeeded, failed with the step and its error line,
    cancelled by Ctrl-C or SIGTERM) is sent to its targets at the end, by the code the
    cluster's ``notify`` exit task runs (:func:`notify_run_end`).

    Raises:
        StepFailed: a step failed (its last lines and the log's path were shown).
        TbpipeError: the pipeline failed otherwise.
    """
    from tbpipe.pipelines.preflight import check

    check(params, sweep)
    params = resolved_for_local_run(params)
    pipeline_root = os.path.abspath(pipeline_root)
    try:
        result = _run_resolved(params, pipeline_root, runner, sweep, verbose, screen,
                               **runner_options)
    except BaseException as exc:
        notify_run_end(params, pipeline_root, exc)
        raise
    notify_run_end(params, pipeline_root, result)
    return result


class StepFailed(TbpipeError):
    """A step of a local run failed: ``step`` and its own error ``line``."""

    def __init__(self, step: str, line: str, message: str) -> None:
        super().__init__(message)
        self.step, self.line = step, line


def notify_run_end(params: PipelineParams, pipeline_root: str,
                   end: LocalRunResult | BaseException) -> None:
    """Send a local run's outcome to ``params.notify``'s targets; never raises.

    ``end``: the result, or what stopped the run (a :class:`StepFailed` names its step).
    A target that cannot be reached is one warning line on standard error.
    """
    if not params.notify:
        return
    from tbpipe.components.common.errors import error_line
    from tbpipe.components.common.naming import tensorboard_run_url
    from tbpipe.components.common.run_summary import read_run_summary
    from tbpipe.components.common.sigterm import Terminated
    from tbpipe.components.notification.config import NotifyConfig
    from tbpipe.components.notification.core import (
        CANCELED,
        FAILED,
        SUCCEEDED,
        outcome_from_summary,
    )
    from tbpipe.components.notification.core import send_notifications as send

    label = f"{params.experiment}/{params.run_name}"
    try:
        summary = read_run_summary(params.log_root, params.experiment, params.run_name)
    except TbpipeError:
        summary = None
    if isinstance(end, LocalRunResult):
        state, step, line = SUCCEEDED, "", ""
    elif isinstance(end, (KeyboardInterrupt, Terminated)):
        state, step, line = CANCELED, "", "stopped by Ctrl-C or SIGTERM"
        summary = None  # an earlier run's summary (--resume) is not this outcome's
    else:
        state, step = FAILED, getattr(end, "step", "")
        line = getattr(end, "line", "") or error_line(end)
        summary = None
    outcome = outcome_from_summary(
        state, label, summary, failed_step=step, error=line,
        tensorboard_url=tensorboard_run_url(params.tensorboard_url, label),
        details=run_log_path(pipeline_root, params))
    send(NotifyConfig(params.notify).targets, outcome,
         warn=lambda text: print(text, file=sys.stderr, flush=True))


def _run_resolved(params: PipelineParams, pipeline_root: str, runner: str,
                  sweep: Sweep | None, verbose: bool, screen,  # noqa: ANN001
                  **runner_options: object) -> LocalRunResult:
    """:func:`run_pipeline` once its parameters are checked and resolved."""
    from tbpipe.components.common.naming import step_log_dir
    from tbpipe.pipelines.placement import CompileOptions
    from tbpipe.pipelines.runners.run_display import RunDisplay, task_display_names
    from tbpipe.pipelines.training import build_training_pipeline

    claim_local_run(params)
    tensorflow_log_level(os.environ)
    gpu = False
    if runner == "docker":
        from tbpipe.pipelines.runners.docker import docker_paths, gpus_usable

        runner_options = {**docker_paths(params), **runner_options}
        gpu = gpus_usable(runner_options.get("gpus"))
    init_runner(runner, pipeline_root, **runner_options)
    # train/finetune use the gpu image only when GPUs really pass through to the containers
    one_at_a_time = (dataclasses.replace(sweep, parallel=1) if isinstance(sweep, TuneConfig)
                     else dataclasses.replace(sweep, max_parallel=1) if sweep else None)
    pipeline = build_training_pipeline(CompileOptions(gpu=gpu, retries=0), one_at_a_time)
    screen = screen or sys.stdout
    names = task_display_names(pipeline.pipeline_spec)
    log_path = run_log_path(pipeline_root, params)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log_tracebacks_to(log_path)  # an unexpected error's traceback goes there (cli.main)
    with open(log_path, "a", encoding="utf-8") as log:
        live = not verbose and screen.isatty()
        output = RunDisplay(screen, log, names, verbose=verbose, live=live)
        if not verbose:
            screen.write(f"tbpipe run {params.experiment}/{params.run_name} (full log: "
                         f"{log_path})\n")
        try:
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output), \
                    warnings.catch_warnings():
                # resources and display names are for the cluster; kfp.local warns per task
                warnings.filterwarnings("ignore",
                                        message=".*no effect in the current local runner")
                # The run is this process's now: its steps continue it (each takes the claim
                # over for kfp.local's job) rather than refuse the claim made just above.
                task = pipeline(**{**params.as_arguments(), "resume": True})
        except RuntimeError as exc:
            output.failed(log_path)
            if output.errors:  # repeat the step's own line: it names the input and what to do
                step, message = output.errors[-1]
                raise StepFailed(step, message, f"step {step} failed: {message}") from exc
            full = full_folders(run_folders(pipeline_root, params))  # a full disk can stop
            if full:  # a step before it could say why (kfp's shell writes to TMPDIR first)
                raise TbpipeError(f"the pipeline failed: {full[0]} (full log: {log_path})") \
                    from exc
            raise TbpipeError(f"the pipeline failed: {str(exc).splitlines()[0]} "
                              f"(full log: {log_path})") from exc
        except OSError:  # writing the run's log, most likely: cli.main names the folder
            raise
        except Exception as exc:  # raised in kfp.local itself, e.g. reading a step's outputs
            raise kfp_local_failed(output, exc, log_path) from exc
    summary = json.loads(task.output)
    if params.promote_to:  # promote's decision: kfp.local returns select-model's output only
        from tbpipe.components.common.run_summary import read_run_summary

        written = read_run_summary(params.log_root, params.experiment, params.run_name) or {}
        summary["promotion"] = written.get("promotion")
    run_dir = os.path.dirname(step_log_dir(params.log_root, params.experiment, params.run_name,
                                           "train"))
    job_dir = os.path.dirname(os.path.dirname(summary["model_uri"]))

    def written(artifact: str) -> dict:  # step display name -> that output's file
        return {names.get(task, task): os.path.join(job_dir, task, artifact)
                for task in sorted(os.listdir(job_dir))
                if os.path.exists(os.path.join(job_dir, task, artifact))}

    return LocalRunResult(params, summary, run_dir, job_dir,
                          f"{params.experiment}/{params.run_name}", log_path, written("report"),
                          written("html_report"))
