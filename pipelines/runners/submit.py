"""Submitting to Kubeflow Pipelines: typed run arguments, names, versions, following a run.

The pipeline is uploaded under its name (a new version when it already exists), the run is
created in ``--experiment`` from that version, and the run's KFP UI address and TensorBoard
address (filtered to ``{experiment}/{run}``) are printed. Every server error is one line.
"""

from __future__ import annotations

import hashlib
import time

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.naming import default_run_name, validate_name
from tbpipe.components.common.run_place import DEFAULT_EXPERIMENT
from tbpipe.components.registry import param_table
from tbpipe.pipelines.runners.kfp_client import KfpConnection
from tbpipe.pipelines.training import PipelineParams

FINISHED = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")


class WaitTimeout(TbpipeError):
    """``submit --wait --timeout``: the run was still going when the time was up."""


def version_name(package: str) -> str:
    """Name a pipeline version uniquely: package version, time and content hash."""
    from tbpipe.components._image import package_version

    with open(package, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()[:8]
    return f"v{package_version()}-{time.strftime('%Y%m%d-%H%M%S')}-{digest}"


def resolve_names(experiment: str | None, run_name: str | None) -> tuple[str, str]:
    """The run's experiment and name: ``--experiment``/``--run-name`` (flag or params file).

    One name serves the KFP experiment/run and the TensorBoard folder ``{experiment}/{run}``.
    """
    return (validate_name("experiment", experiment or DEFAULT_EXPERIMENT),
            validate_name("run", run_name or default_run_name()))


def flag_of(key: str) -> str:
    """The ``run``/``submit`` flag of pipeline parameter ``key`` (``--finetune-epochs``)."""
    return "--" + key.replace("_", "-")


def run_arguments(parameters: dict[str, dict], given: dict[str, str]) -> dict[str, object]:
    """Check and type the run's arguments ``given`` (as text) against the spec's inputs.

    Raises:
        InputError: an unknown parameter, a value of the wrong type or, for the tbpipe
            pipeline, a value out of range or a log_root only this machine has.

    """
    if "model_source" in parameters and "model" in given and "model_source" not in given:
        from tbpipe.components.training.config import ModelSpec

        source = ModelSpec(given["model"]).read_source()  # the file -> the cluster
        given = {**given, "model_source": source}
    arguments = {key: typed(key, text, parameters) for key, text in given.items()}
    fields = {name: param.type for name, param in param_table().items()}
    if set(parameters) <= set(fields):  # the tbpipe pipeline: check ranges before anything runs
        defaults = {k: p["defaultValue"] for k, p in parameters.items() if "defaultValue" in p}
        values = {k: fields[k](v) for k, v in {**defaults, **arguments}.items()}  # 10.0 -> 10
        PipelineParams(**values).validate()
    if ("log_root" in parameters and "log_root" not in given
            and not parameters["log_root"].get("defaultValue")):  # --log-volume gives one
        raise InputError("submit needs --log-root gs://BUCKET/logs (or s3://..., or "
                         "--log-volume PVC): the log root the cluster's pods and TensorBoard "
                         "share (the compiled pipeline has none)")
    return arguments


def typed(key: str, text: str, parameters: dict[str, dict]) -> object:
    """``text`` converted to the type the spec declares for parameter ``key``."""
    if key not in parameters:
        raise InputError(f"{flag_of(key)}: the pipeline in --package has no such parameter "
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
        raise InputError(f"{flag_of(key)} {text}: expected {expected}") from None
    if kind in ("LIST", "STRUCT"):
        import json

        try:
            return json.loads(text)
        except ValueError:
            raise InputError(f"{flag_of(key)} {text}: expected JSON ({kind.lower()})") from None
    return text


def follow(kfp: KfpConnection, run_id: str, interval: float, timeout: float | None,
           tries: int = 3) -> tuple[str, str]:
    """Poll the run until it finishes, printing each change; returns (state, error message).

    A poll that fails is retried (``tries`` in a row at most): a long run outlives blips.
    Each poll is bounded by the connection's request timeout, and ``timeout`` (``--timeout``)
    bounds the whole wait, failing polls included.
    """
    start, shown, failures = time.monotonic(), None, 0
    while True:
        elapsed = time.monotonic() - start
        try:
            state, tasks, message = kfp.run_status(run_id)
            failures = 0
        except TbpipeError as exc:
            failures += 1
            if failures >= tries or (timeout is not None and elapsed > timeout):
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
            raise WaitTimeout(f"run {run_id} still {state} after {timeout:g}s (--timeout); it "
                              "keeps running on the cluster")
        time.sleep(interval)
