"""``tbpipe submit``: compile, upload to Kubeflow Pipelines, start a run, optionally follow it.

The pipeline is uploaded under its name (a new version when it already exists), the run is
created in ``--experiment`` from that version, and the run's KFP UI address and TensorBoard
address (filtered to ``{experiment}/{run}``) are printed. Every server error is one line.
"""

from __future__ import annotations

import argparse
import os
import tempfile

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.pipelines.cli.flags import (
    add_compile_arguments,
    add_sweep_arguments,
    compile_options,
    key_value,
    sweep_from_args,
)
from tbpipe.pipelines.placement import CompileOptions
from tbpipe.pipelines.runners.kfp_client import (
    DEFAULT_REQUEST_TIMEOUT_S,
    KfpConnection,
    check_timeout,
    read_package,
)
from tbpipe.pipelines.runners.submit import follow, resolve_names, run_arguments, version_name
from tbpipe.pipelines.training import PipelineParams, compile_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``submit``."""
    cmd = subparsers.add_parser("submit",
                                help="upload the pipeline to Kubeflow Pipelines and run it")
    add = cmd.add_argument
    add("--host", default=None, help="KFP API address (default: $KFP_HOST, then kfp.Client's "
        "own lookup: $KF_PIPELINES_ENDPOINT, in-cluster, kubeconfig)")
    add("--namespace", default=None, help="KFP namespace (multi-user deployments)")
    add("--experiment", default=None, help="KFP experiment, also the pipeline's experiment "
        f"parameter (default: {PipelineParams.experiment})")
    add("--run-name", default=None, help="run name, also the run_name parameter "
        "(default: run-YYYYmmdd-HHMMSS)")
    add("--param", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help="a pipeline parameter, e.g. log_root=gs://BUCKET/logs (repeatable)")
    add("--package", default=None, help="a compiled pipeline YAML (default: compile now)")
    add("--pipeline-root", default=None, help="where KFP keeps artifacts (default: the cluster's)")
    add("--service-account", default=None, help="Kubernetes service account of the run's pods")
    add("--token-file", default=None, help="file holding a bearer token for the KFP API "
        "(or set $KFP_TOKEN)")
    add("--ui-host", default=None, help="KFP UI address for links (default: "
        "$KF_PIPELINES_UI_ENDPOINT, then --host)")
    add("--wait", action="store_true", help="follow the run; exit 1 unless it succeeds")
    add("--timeout", type=float, default=None, metavar="SECONDS", help="with --wait: give up after")
    add("--poll-interval", type=float, default=10.0, metavar="SECONDS",
        help="with --wait: time between polls (default: 10)")
    add("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, metavar="SECONDS",
        help="give up on a KFP API request that gets no answer for this long (default: "
             f"{DEFAULT_REQUEST_TIMEOUT_S:g}; a call tries to connect at most 3 times)")
    add_compile_arguments(cmd)
    add_sweep_arguments(cmd)
    cmd.set_defaults(handler=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    """``tbpipe submit``: the whole path, printing where the run and its logs can be seen."""
    host = args.host or os.environ.get("KFP_HOST")
    check_timeout(args.request_timeout)
    options = compile_options(args)
    sweep = sweep_from_args(args)
    if args.package and options != CompileOptions():
        raise InputError(f"--package {args.package} is compiled already: placement flags "
                         "apply when submit compiles; pass them to tbpipe compile instead")
    if args.package and sweep:
        raise InputError(f"--package {args.package} is compiled already: --sweep applies when "
                         "submit compiles; pass it to tbpipe compile instead")
    with tempfile.TemporaryDirectory(prefix="tbpipe-submit-") as tmp:
        package = args.package or compile_pipeline(os.path.join(tmp, "pipeline.yaml"), options,
                                                   sweep)
        spec = read_package(package)
        given = dict(args.param)
        experiment, run_name = resolve_names(args.experiment, args.run_name, given)
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
    ui = (args.ui_host or os.environ.get("KF_PIPELINES_UI_ENDPOINT") or host or "").rstrip("/")
    run_url = f"{ui or '/pipeline'}/#/runs/details/{run_id}"
    print(f"run {experiment}/{run_name}: {run_url}")
    board = arguments.get("tensorboard_url", spec.parameters.get("tensorboard_url", {})
                          .get("defaultValue"))
    if board:
        print(f"TensorBoard: {tensorboard_run_url(str(board), f'{experiment}/{run_name}')}")
    if args.wait:
        state, message = follow(kfp, run_id, args.poll_interval, args.timeout)
        if state != "SUCCEEDED":
            raise TbpipeError(f"run {run_name} ended {state}{': ' + message if message else ''}"
                              f" (details: {run_url})")
        print(f"run {run_name} SUCCEEDED")
    return 0
