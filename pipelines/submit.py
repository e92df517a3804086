"""``tbpipe submit``: compile, upload to Kubeflow Pipelines, start a run, optionally follow it.

The pipeline is uploaded under its name (a new version when it already exists), the run is
created in ``--experiment`` from that version, and the run's KFP UI address and TensorBoard
address (filtered to ``{experiment}/{run}``) are printed. Every server error is one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import tempfile
import time

from components.common.errors import InputError, TbpipeError
from components.common.naming import default_run_name, validate_name
from pipelines.kfp_api import KfpConnection, read_package
from pipelines.options import PipelineParams
from pipelines.placement import (
    CompileOptions,
    add_compile_arguments,
    compile_options,
    key_value,
)

FINISHED = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


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
    add_compile_arguments(cmd)
    cmd.set_defaults(handler=run_submit)


def run_submit(args: argparse.Namespace) -> int:
    """``tbpipe submit``: the whole path, printing where the run and its logs can be seen."""
    host = args.host or os.environ.get("KFP_HOST")
    options = compile_options(args)
    if args.package and options != CompileOptions():
        raise InputError(f"--package {args.package} is compiled already: placement flags "
                         "apply when submit compiles; pass them to tbpipe compile instead")
    with tempfile.TemporaryDirectory(prefix="tbpipe-submit-") as tmp:
        package = args.package or compile_pipeline_to(os.path.join(tmp, "pipeline.yaml"), options)
        spec = read_package(package)
        given = dict(args.param)
        experiment, run_name = resolve_names(args.experiment, args.run_name, given)
        given.update({k: v for k, v in (("experiment", experiment), ("run_name", run_name))
                      if k in spec.parameters})
        arguments = run_arguments(spec.parameters, given)
        kfp = KfpConnection.open(host, args.namespace, token_file=args.token_file,
                                 token=os.environ.get("KFP_TOKEN"))
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
        from components.evaluate.report import tensorboard_run_url

        print(f"TensorBoard: {tensorboard_run_url(str(board), f'{experiment}/{run_name}')}")
    if args.wait:
        state, message = follow(kfp, run_id, args.poll_interval, args.timeout)
        if state != "SUCCEEDED":
            raise TbpipeError(f"run {run_name} ended {state}{': ' + message if message else ''}"
                              f" (details: {run_url})")
        print(f"run {run_name} SUCCEEDED")
    return 0


def compile_pipeline_to(path: str, options: CompileOptions) -> str:
    """Compile the tbpipe pipeline (imported only now: it pulls in every component)."""
    from pipelines.training import compile_pipeline

    return compile_pipeline(path, options)


def version_name(package: str) -> str:
    """Name a pipeline version uniquely: package version, time and content hash."""
    from components._image import package_version

    with open(package, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:8]
    return f"v{package_version()}-{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


def resolve_names(experiment: str | None, run_name: str | None,
                  given: dict[str, str]) -> tuple[str, str]:
    """Pick the run's experiment and name from ``--experiment``/``--run-name`` or ``--param``.

    One name serves the KFP experiment/run and the TensorBoard folder ``{experiment}/{run}``.
    """
    names = []
    for key, flag, value, default in (("experiment", "--experiment", experiment,
                                       PipelineParams.experiment),
                                      ("run_name", "--run-name", run_name, None)):
        if value and given.get(key, value) != value:
            raise InputError(f"--param {key}={given[key]} conflicts with {flag} {value}: "
                             "give one of them")
        chosen = value or given.get(key) or default or default_run_name()
        names.append(validate_name(key.split("_")[0], chosen))
    return names[0], names[1]


def run_arguments(parameters: dict[str, dict], given: dict[str, str]) -> dict[str, object]:
    """Check and type the run's arguments ``given`` (strings) against the spec's inputs.

    Raises:
        InputError: an unknown parameter, a value of the wrong type or, for the tbpipe
            pipeline, a value out of range or a log_root only this machine has.

    """
    arguments = {key: typed(key, text, parameters) for key, text in given.items()}
    fields = {f.name for f in dataclasses.fields(PipelineParams)}
    if set(parameters) <= fields:  # the tbpipe pipeline: check ranges before anything runs
        defaults = {k: p["defaultValue"] for k, p in parameters.items() if "defaultValue" in p}
        PipelineParams(**{**defaults, **arguments}).validate()
    if "log_root" in parameters and "log_root" not in given:
        raise InputError("submit needs --param log_root=gs://BUCKET/logs: the compiled default "
                         f"{parameters['log_root'].get('defaultValue')!r} is a path on this "
                         "machine, not one the cluster's pods and TensorBoard share")
    return arguments


def typed(key: str, text: str, parameters: dict[str, dict]) -> object:
    """``text`` converted to the type the spec declares for parameter ``key``."""
    if key not in parameters:
        raise InputError(f"--param {key}: the pipeline has no such parameter "
                         f"(it has: {', '.join(sorted(parameters))})")
    kind = parameters[key].get("parameterType", "STRING")
    try:
        if kind == "NUMBER_INTEGER":
            return int(text)
        if kind == "NUMBER_DOUBLE":
            return float(text)
        if kind == "BOOLEAN":
            return {"true": True, "1": True, "yes": True,
                    "false": False, "0": False, "no": False}[text.lower()]
    except (ValueError, KeyError):
        expected = kind.lower().replace("_", " ")
        raise InputError(f"--param {key}={text}: expected {expected}") from None
    if kind in ("LIST", "STRUCT"):
        import json

        try:
            return json.loads(text)
        except ValueError:
            raise InputError(f"--param {key}={text}: expected JSON ({kind.lower()})") from None
    return text


def follow(kfp: KfpConnection, run_id: str, interval: float, timeout: float | None,
           tries: int = 3) -> tuple[str, str]:
    """Poll the run until it finishes, printing each change; returns (state, error message).

    A poll that fails is retried (``tries`` in a row at most): a long run outlives blips.
    """
    start, shown, failures = time.monotonic(), None, 0
    while True:
        elapsed = time.monotonic() - start
        try:
            state, tasks, message = kfp.run_status(run_id)
            failures = 0
        except TbpipeError as exc:
            failures += 1
            if failures >= tries:
                raise
            print(f"(no answer: {exc}; retrying)", flush=True)
            time.sleep(interval)
            continue
        line = ", ".join(f"{name} {task_state}" for name, task_state in tasks)
        if (state, line) != shown:
            minutes, seconds = divmod(int(elapsed), 60)
            print(f"[{minutes:3d}:{seconds:02d}] {state}" + (f" | {line}" if line else ""),
                  flush=True)
            shown = (state, line)
        if state in FINISHED:
            return state, message
        if timeout is not None and elapsed > timeout:
            raise TbpipeError(f"run {run_id} still {state} after {timeout:g}s (--timeout); it "
                              "keeps running on the cluster")
        time.sleep(interval)
