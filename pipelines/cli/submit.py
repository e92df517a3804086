"""``tbpipe submit``: compile, upload to Kubeflow Pipelines, start a run, optionally follow it.

The pipeline is uploaded under its name (a new version when it already exists), the run is
created in ``--experiment`` from that version, and the run's KFP UI address and TensorBoard
address (filtered to ``{experiment}/{run}``) are printed. Every server error is one line.
Pipeline parameters are the flags of ``tbpipe run`` (and ``--params-file``); only those given
are sent, the rest keep the compiled pipeline's defaults.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.pipelines.cli.flags import (
    add_compile_arguments,
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
    DEFAULT_REQUEST_TIMEOUT_S,
    KfpConnection,
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
    add("--endpoint", default=None, metavar="URL",
        help="KFP API address, as kfp's --endpoint (default: $KFP_HOST, then kfp.Client's "
             "own lookup: $KF_PIPELINES_ENDPOINT, in-cluster, kubeconfig)")
    add("--namespace", default=None, help="KFP namespace (multi-user deployments)")
    add("--package", default=None, metavar="PATH",
        help="a compiled pipeline YAML (tbpipe compile --package; default: compile now)")
    add("--pipeline-root", default=None, help="where KFP keeps artifacts (default: the cluster's)")
    add("--service-account", default=None, help="Kubernetes service account of the run's pods")
    add("--token-file", default=None, help="file holding a bearer token for the KFP API "
        "(or set $KFP_TOKEN)")
    add("--ui-endpoint", default=None, metavar="URL", help="KFP UI address for links (default: "
        "$KF_PIPELINES_UI_ENDPOINT, then --endpoint)")
    add("--wait", action="store_true",
        help=f"follow the run; exit {EXIT_RUN_FAILED} if it fails, {EXIT_TIMEOUT} on --timeout")
    add("--timeout", type=float, default=None, metavar="SECONDS", help="with --wait: give up after")
    add("--poll-interval", type=float, default=10.0, metavar="SECONDS",
        help="with --wait: time between polls (default: 10)")
    add("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, metavar="SECONDS",
        help="give up on a KFP API request that gets no answer for this long (default: "
             f"{DEFAULT_REQUEST_TIMEOUT_S:g}; a call tries to connect at most 3 times)")
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


def submit_run(args: argparse.Namespace) -> tuple[dict, int]:
    """Submit (and with ``--wait`` follow) the run; its result object and exit status."""
    host = args.endpoint or os.environ.get("KFP_HOST")
    check_timeout(args.request_timeout)
    options = compile_options(args)
    sweep = sweep_from_args(args)
    if args.package and options != CompileOptions():
        raise InputError(f"--package {args.package} is compiled already: placement flags "
                         "apply when submit compiles; pass them to tbpipe compile instead")
    if args.package and sweep:
        flag = "--tune" if args.tune else "--sweep"
        raise InputError(f"--package {args.package} is compiled already: {flag} applies when "
                         "submit compiles; pass it to tbpipe compile instead")
    values = given_params(args)
    check(PipelineParams(**values), sweep, local=False)  # parsed once, at the edge
    given = {key: as_text(value) for key, value in values.items()}
    with tempfile.TemporaryDirectory(prefix="tbpipe-submit-") as tmp:
        package = args.package or compile_pipeline(os.path.join(tmp, "pipeline.yaml"), options,
                                                   sweep)
        spec = read_package(package)
        experiment, run_name = resolve_names(given.get("experiment"), given.get("run_name"))
        given.update({k: v for k, v in (("experiment", experiment), ("run_name", run_name))
                      if k in spec.parameters})
        arguments = run_arguments(spec.parameters, given)
        kfp = KfpConnection.open(host, args.namespace, token_file=args.token_file,
                                 token=os.environ.get("KFP_TOKEN"),
                                 timeout=args.request_timeout)
        target = kfp.upload(package, spec.name, version_name(package))
    print(f"pipeline {spec.name}: {target.describe()}")
    run_id = kfp.start_run(kfp.experiment(experiment), run_name, target, arguments,
                           pipeline_root=args.pipeline_root, service_account=args.service_account)
    ui = (args.ui_endpoint or os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host or "")
    run_url = f"{ui.rstrip('/') or '/pipeline'}/#/runs/details/{run_id}"
    print(f"run {experiment}/{run_name}: {run_url}")
    board = arguments.get("tensorboard_url", spec.parameters.get("tensorboard_url", {})
                          .get("defaultValue"))
    board_url = tensorboard_run_url(str(board), f"{experiment}/{run_name}") if board else None
    if board_url:
        print(f"TensorBoard: {board_url}")
    log_root = str(arguments.get("log_root", ""))
    result = {"run_id": run_id, "run_url": run_url, "experiment": experiment,
              "run_name": run_name, "pipeline": spec.name, "tensorboard_url": board_url,
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
