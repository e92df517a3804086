"""MLflow's Model Registry as a mirror of tbpipe's registry (``--mlflow-uri``).

Each promotion registers a model version in MLflow (``MlflowClient``): a run in the
experiment ``tbpipe-promotions`` holds the version's metrics, its blessing and its registry
entry (artifacts ``tbpipe/blessing.json`` and ``tbpipe/version.json``); the model version's
source is that run's ``tbpipe`` folder, its tags name the tbpipe version and the folder that
holds the model (``tbpipe.uri``), and the alias ``champion`` moves to it. The registered
model's name is the registry folder's name (``.../models/digits`` -> ``digits``).

``tbpipe models rollback|alias`` move the same alias in MLflow (:func:`follow_alias`): to the
model version tagged ``tbpipe.uri`` = the tbpipe version's folder, on the server the
version's entry names (``mlflow_uri``, recorded by the promotion) or ``--mlflow-uri``.

tbpipe's own registry (``--promote-to``) stays the record production is served from. A
tracking server that does not answer is found before anything is promoted
(:func:`check_server`: the promote step fails with one line, nothing changed); one that
fails after the version was written (:func:`register_version`) is a warning in the step's
output, since production has already moved and stays whole.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping

from tbpipe.components.common.errors import InputError

EXPERIMENT = "tbpipe-promotions"
#: What an MLflow tracking URI starts with (a server, or a Databricks workspace).
TRACKING_SCHEMES = ("http://", "https://", "databricks")
URI_TAG = "tbpipe.uri"  # a model version's tag: the tbpipe version folder it is
_TIMEOUT_S = "10"


def _first_line(exc: BaseException) -> str:
    """An exception's first line (at most 200 characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _client(tracking_uri: str):  # noqa: ANN202 - mlflow.MlflowClient
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", _TIMEOUT_S)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise InputError("--mlflow-uri needs the mlflow package: pip install "
                         "'tbpipe[mlflow]'") from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def model_name(target: str) -> str:
    """The registered model's name: the registry folder's last part, made MLflow-safe."""
    name = target.rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name) or "tbpipe-model"


def check_server(tracking_uri: str) -> None:
    """InputError (one line) unless the MLflow tracking server answers."""
    client = _client(tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure of the server is one line here
        raise InputError(f"--mlflow-uri {tracking_uri}: the MLflow tracking server does not "
                         f"answer ({_first_line(exc)}); start it or drop --mlflow-uri. Nothing was "
                         "promoted") from None


def register_version(tracking_uri: str, target: str, entry: Mapping[str, object],
                     blessing: Mapping[str, object] | None) -> str:
    """Register ``entry`` (a promoted version of ``target``) in MLflow; a line saying so.

    Never raises for the server's failures: the line is then a warning (production has
    moved already; see the module).
    """
    try:
        return _register(tracking_uri, target, entry, blessing)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported, not raised: see the module
        return (f"warning: {entry['version']} was promoted but not registered in MLflow at "
                f"{tracking_uri} ({_first_line(exc)}); tbpipe's registry holds it whole")


def _register(tracking_uri: str, target: str, entry: Mapping[str, object],
              blessing: Mapping[str, object] | None) -> str:
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    name = model_name(target)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(EXPERIMENT))
    version = str(entry["version"])
    run = client.create_run(experiment_id, run_name=f"{name}-{version}",
                            tags={"tbpipe.run": str(entry.get("run", "")),
                                  "tbpipe.version": version})
    run_id = run.info.run_id
    metrics = entry.get("metrics") or entry.get("new") or {}
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))
    with tempfile.TemporaryDirectory() as folder:
        for file, body in (("blessing.json", blessing or {}), ("version.json", entry)):
            with open(os.path.join(folder, file), "w") as handle:
                json.dump(body, handle, indent=2, sort_keys=True)
        client.log_artifacts(run_id, folder, artifact_path="tbpipe")
    client.set_terminated(run_id)
    try:
        client.create_registered_model(name, description="Promoted by tbpipe")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    tags = {URI_TAG: f"{target}/{version}", "tbpipe.version": version,
            "tbpipe.run": str(entry.get("run", "")),
            "tbpipe.parent": str(entry.get("parent", "")),
            "tbpipe.data_digest": str(entry.get("data_digest", "")),
            "tbpipe.blessed": str(bool((blessing or {}).get("passed"))).lower(),
            "tbpipe.forced": str(bool(entry.get("forced"))).lower(),
            "tbpipe.blessing": str((blessing or {}).get("summary", ""))[:4000]}
    registered = client.create_model_version(name, f"runs:/{run_id}/tbpipe", run_id=run_id,
                                             tags=tags)
    client.set_registered_model_alias(name, "champion", registered.version)
    return (f"registered in MLflow as {name} version {registered.version} (alias champion) "
            f"at {tracking_uri}")


def follow_alias(tracking_uri: str, target: str, alias: str, version: str) -> str:
    """Point MLflow's ``alias`` at the model version registered for ``version``; a line.

    The model version is the one of :func:`model_name` tagged ``tbpipe.uri`` =
    ``{target}/{version}`` (the newest, if registered twice). Call it once tbpipe's registry
    has moved: it never raises, a move it cannot make is a one-line warning (tbpipe's
    registry stays moved, whole).
    """
    moved = f"{alias} moved to {version} in tbpipe's registry, but not in MLflow at {tracking_uri}"
    try:
        client = _client(tracking_uri)
        name = model_name(target)
        found = _registered(client, name, f"{target}/{version}")
        if found is None:
            return (f"warning: {moved}: no version of {name} there is tagged {URI_TAG}="
                    f"{target}/{version} ({version} was not registered in it)")
        client.set_registered_model_alias(name, alias, found)
    except Exception as exc:  # noqa: BLE001 - reported, not raised: see above
        return f"warning: {moved} ({_first_line(exc)})"
    return f"MLflow: {alias} -> {name} version {found} at {tracking_uri}"


def _registered(client, name: str, uri: str) -> str | None:  # noqa: ANN001 - MlflowClient
    """The newest version number of registered model ``name`` tagged ``tbpipe.uri`` = ``uri``."""
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        found += [int(v.version) for v in page if v.tags.get(URI_TAG) == uri]
        token = page.token
        if not token:
            return str(max(found)) if found else None
