"""``tbpipe submit``: compile, upload to Kubeflow Pipelines, start a run, optionally follow it.

The pipeline is uploaded under its name (a new version when it already exists), the run is
created in ``--experiment`` from that version, and the run's KFP UI address and TensorBoard
address (filtered to ``{experiment}/{run}``) are printed. Every server error is one line.
Pipeline parameters are the flags of ``tbpipe run`` (and ``--params-file``); only those given
are sent, the rest keep the compiled pipeline's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.pipelines.cli.flags import (
    add_compile_arguments,
    add_connection_arguments,
    add_param_arguments,
    add_sweep_arguments,
    compile_options,
    given_params,
    sweep_from_args,
)
from tbpipe.pipelines.cli.output import add_output_argument, emit, result_output
from tbpipe.pipelines.placement import CompileOptions
from tbpipe.pipelines.preflight import check
from tbpipe.pipelines.runners.kfp_client import (
    KfpConnection,
    PipelineTarget,
    check_timeout,
    read_package,
)
from tbpipe.pipelines.runners.submit import (
    WaitTimeout,
    follow,
    resolve_names,
    run_arguments,
    version_name,
)
from tbpipe.pipelines.training import PipelineParams, compile_pipeline

#: ``submit --wait`` exit status when the run ended other than SUCCEEDED (failed, canceled).
EXIT_RUN_FAILED = 3
#: ``submit --wait --timeout`` exit status when the run was still going at the timeout.
EXIT_TIMEOUT = 4


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit``."""
    cmd = subparsers.add_parser(
        "submit", help="upload the pipeline to Kubeflow Pipelines and run it",
        description="Compile (or take --package), upload and start a run on Kubeflow "
                    "Pipelines. Exit status: 0 started (with --wait: succeeded), 1 error, "
                    f"2 usage error; with --wait, {EXIT_RUN_FAILED} the run failed or was "
                    f"canceled, {EXIT_TIMEOUT} --timeout reached (the run goes on).")
    add = cmd.add_argument
    add_connection_arguments(cmd)
    add("--ui-endpoint", default=None, metavar="URL", help="KFP UI address for links (default: "
        "$KF_PIPELINES_UI_ENDPOINT, then --endpoint)")
    add("--wait", action="store_true",
        help=f"follow the run; exit {EXIT_RUN_FAILED} if it fails, {EXIT_TIMEOUT} on --timeout")
    add("--timeout", type=float, default=None, metavar="SECONDS", help="with --wait: give up after")
    add("--poll-interval", type=float, default=10.0, metavar="SECONDS",
        help="with --wait: time between polls (default: 10)")
    add_output_argument(cmd)
    add_param_arguments(cmd)
    add_compile_arguments(cmd)
    add_sweep_arguments(cmd)
    cmd.set_defaults(handler=run_submit)


def as_text(value: object) -> str:
    """A parameter value as the text :func:`run_arguments` types against the spec."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def run_submit(args: argparse.Namespace) -> int:
    """``tbpipe submit``: the whole path, printing where the run and its logs can be seen."""
    with result_output(args) as out:
        result, code = submit_run(args)
        if args.output == "json":
            emit(out, result)
    return code


@dataclasses.dataclass(frozen=True)
class Upload:
    """The pipeline uploaded for a run (or a schedule of runs), and what it is run with."""

    kfp: KfpConnection
    target: PipelineTarget
    pipeline: str
    parameters: dict[str, dict]  # the compiled spec's inputs
    experiment: str
    run_name: str  # empty for a schedule: KFP names each run
    arguments: dict[str, object]


def upload_for_run(args: argparse.Namespace, doing: str = "submit",
                   one_run: bool = True) -> Upload:
    """Check the flags, compile (or take ``--package``), upload; the run's typed arguments.

    ``one_run``: name the run (``--run-name``, default timestamped); False for a schedule,
    whose runs KFP names (a ``--run-name`` would make every run claim one folder: refused).
    """
    host = args.endpoint or os.environ.get("KFP_HOST")
    check_timeout(args.request_timeout)
    options = compile_options(args)
    sweep = sweep_from_args(args)
    if args.package and options != CompileOptions():
        raise InputError(f"--package {args.package} is compiled already: placement flags "
                         f"apply when {doing} compiles; pass them to tbpipe compile instead")
    if args.package and sweep:
        flag = "--tune" if args.tune else "--sweep"
        raise InputError(f"--package {args.package} is compiled already: {flag} applies when "
                         f"{doing} compiles; pass it to tbpipe compile instead")
    values = given_params(args)
    if not one_run and values.get("run_name"):
        raise InputError(f"--run-name {values['run_name']}: each scheduled run is named by KFP "
                         "(its job name), so runs never share a log folder; drop --run-name")
    if values.get("notify") and not args.package:  # its exit task is compiled in
        options = dataclasses.replace(options, notify=str(values["notify"]))
    check(PipelineParams(**values), sweep, local=False)  # parsed once, at the edge
    given = {key: as_text(value) for key, value in values.items()}
    with tempfile.TemporaryDirectory(prefix="tbpipe-submit-") as tmp:
        package = args.package or compile_pipeline(os.path.join(tmp, "pipeline.yaml"), options,
                                                   sweep)
        spec = read_package(package)
        if values.get("notify") and args.package and not has_exit_task(package):
            raise InputError(f"--notify: --package {args.package} was compiled without it, so "
                             "no step would send the message; compile with tbpipe compile "
                             "--notify TARGET (or let this command compile)")
        experiment, run_name = resolve_names(given.get("experiment"), given.get("run_name"))
        run_name = run_name if one_run else ""
        given.update({k: v for k, v in (("experiment", experiment), ("run_name", run_name))
                      if k in spec.parameters and v})
        arguments = run_arguments(spec.parameters, given)
        kfp = KfpConnection.open(host, args.namespace, token_file=args.token_file,
                                 token=os.environ.get("KFP_TOKEN"),
                                 timeout=args.request_timeout)
        target = kfp.upload(package, spec.name, version_name(package))
    print(f"pipeline {spec.name}: {target.describe()}")
    return Upload(kfp, target, spec.name, spec.parameters, experiment, run_name, arguments)


def has_exit_task(package: str) -> bool:
    """Whether a compiled pipeline has tbpipe's ``notify`` exit task (``compile --notify``)."""
    import yaml

    with open(package, encoding="utf-8") as handle:
        spec = next(iter(yaml.load_all(handle, Loader=getattr(yaml, "CSafeLoader",
                                                               yaml.SafeLoader))))
    return "comp-notify" in spec.get("components", {})


def submit_run(args: argparse.Namespace) -> tuple[dict, int]:
    """Submit (and with ``--wait`` follow) the run; its result object and exit status."""
    host = args.endpoint or os.environ.get("KFP_HOST")
    up = upload_for_run(args)
    kfp, experiment, run_name, arguments = up.kfp, up.experiment, up.run_name, up.arguments
    run_id = kfp.start_run(kfp.experiment(experiment), run_name, up.target, arguments,
                           pipeline_root=args.pipeline_root, service_account=args.service_account)
    ui = (args.ui_endpoint or os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host or "")
    run_url = f"{ui.rstrip('/') or '/pipeline'}/#/runs/details/{run_id}"
    print(f"run {experiment}/{run_name}: {run_url}")
    board = arguments.get("tensorboard_url", up.parameters.get("tensorboard_url", {})
                          .get("defaultValue"))
    board_url = tensorboard_run_url(str(board), f"{experiment}/{run_name}") if board else None
    if board_url:
        print(f"TensorBoard: {board_url}")
    log_root = str(arguments.get("log_root", ""))
    result = {"run_id": run_id, "run_url": run_url, "experiment": experiment,
              "run_name": run_name, "pipeline": up.pipeline, "tensorboard_url": board_url,
              "log_root": log_root or None,
              "log_dir": f"{log_root.rstrip('/')}/{experiment}/{run_name}" if log_root else None,
              "state": None}
    if not args.wait:
        return result, 0
    try:
        state, message = follow(kfp, run_id, args.poll_interval, args.timeout)
    except WaitTimeout as exc:
        print(f"tbpipe: error: {exc}", file=sys.stderr)
        return {**result, "state": "TIMEOUT"}, EXIT_TIMEOUT
    result["state"] = state
    if state != "SUCCEEDED":
        error = TbpipeError(f"run {run_name} ended {state}{': ' + message if message else ''}"
                            f" (details: {run_url})")
        print(f"tbpipe: error: {error}", file=sys.stderr)
        return result, EXIT_RUN_FAILED
    print(f"run {run_name} SUCCEEDED")
    return result, 0
