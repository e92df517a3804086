"""KfpStandIn: a SMALL STAND-IN for the Kubeflow Pipelines v2beta1 API server. A TEST DOUBLE.

It is not Kubeflow Pipelines and runs nothing. It answers, on 127.0.0.1, the few endpoints
``kfp.Client`` calls on the ``tbpipe submit`` path, keeps what it receives in memory, and checks
it the way the real server would reject it:

    GET  /apis/v2beta1/healthz
    GET  /apis/v2beta1/pipelines                      (filter: display_name EQUALS)
    POST /apis/v2beta1/pipelines/upload               (multipart ``uploadfile``)
    POST /apis/v2beta1/pipelines/upload_version       (multipart ``uploadfile``, ``pipelineid``)
    GET  /apis/v2beta1/pipelines/{id}/versions        (newest first)
    GET  /apis/v2beta1/experiments                    (filter: display_name EQUALS)
    POST /apis/v2beta1/experiments
    POST /apis/v2beta1/runs
    GET  /apis/v2beta1/runs/{id}                      (walks through ``run_states``)
    POST /apis/v2beta1/recurringruns
    GET  /apis/v2beta1/recurringruns                  (filter: display_name EQUALS)
    DELETE /apis/v2beta1/recurringruns/{id}

Checks (a failure answers 400 and is appended to ``problems``): an uploaded package must parse
as a PipelineSpec (first YAML document) and PlatformSpec (second, if any); a run must name a
known experiment and pipeline version, and its parameters must be inputs of that version's
spec with values of the declared type; a recurring run's body must deserialize into kfp's own
client model (``kfp_server_api.V2beta1RecurringRun``) with no field the model lacks, have
exactly one trigger (a cron of 6 fields, seconds first, as KFP's scheduler reads it, or an
interval above 0), a max_concurrency of 1 to 10 (KFP's bounds) and a mode.
``fail(status, path_prefix)`` makes matching requests answer an error instead (401, 404,
500, ...).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml

API = "/apis/v2beta1"
NOW = "2026-01-01T00:00:00Z"
TYPE_CHECKS = {"STRING": lambda v: isinstance(v, str),
               "NUMBER_INTEGER": lambda v: isinstance(v, int) and not isinstance(v, bool),
               "NUMBER_DOUBLE": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
               "BOOLEAN": lambda v: isinstance(v, bool)}


class StandInError(Exception):
    """An error answer: HTTP status and message (shaped like KFP's error JSON)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class KfpStandIn:
    """The stand-in server's state; ``with KfpStandIn() as kfp:`` serves on ``kfp.url``."""

    def __init__(self) -> None:
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.specs: dict[str, dict] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        self.problems: list[str] = []
        self.failures: list[tuple[int, str]] = []
        self.run_states: list = ["SUCCEEDED"]  # "STATE" or ("STATE", {task: state}, error)
        self._polls: dict[str, itertools.count] = {}
        self._server: ThreadingHTTPServer | None = None

    def fail(self, status: int, path_prefix: str = "") -> None:
        """Answer ``status`` to every request whose path starts with ``API + path_prefix``."""
        self.failures.append((status, API + path_prefix))

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> KfpStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, args=(0.05,),  # quick shutdown
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- endpoints -------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body: bytes, ctype: str) -> dict:
        """Route one request; returns the JSON answer or raises StandInError."""
        self.requests.append((method, path))
        for status, prefix in self.failures:
            if path.startswith(prefix):
                raise StandInError(status, f"stand-in told to answer {status}")
        parts = path[len(API):].strip("/").split("/")
        routes = {("GET", "healthz"): lambda: {"multi_user": False, "pipeline_store": "database"},
                  ("GET", "pipelines"): lambda: {"pipelines": _filtered(self.pipelines, query)},
                  ("POST", "pipelines/upload"): lambda: self._upload(query, body, ctype, None),
                  ("POST", "pipelines/upload_version"):
                      lambda: self._upload(query, body, ctype, query.get("pipelineid")),
                  ("GET", "experiments"): lambda: {"experiments": _filtered(self.experiments,
                                                                            query)},
                  ("POST", "experiments"): lambda: self._experiment(json.loads(body)),
                  ("POST", "runs"): lambda: self._run(json.loads(body)),
                  ("POST", "recurringruns"): lambda: self._recurring_run(json.loads(body)),
                  ("GET", "recurringruns"):
                      lambda: {"recurringRuns": _filtered(self.recurring_runs, query),
                               "total_size": len(_filtered(self.recurring_runs, query))}}
        key = "/".join(parts)
        if (method, key) in routes:
            return routes[(method, key)]()
        if method == "GET" and len(parts) == 3 and parts[0] == "pipelines" \
                and parts[2] == "versions":
            versions = self.versions.get(parts[1])
            if versions is None:
                raise StandInError(404, f"pipeline {parts[1]} not found")
            return {"pipeline_versions": list(reversed(versions)), "total_size": len(versions)}
        if method == "GET" and len(parts) == 2 and parts[0] == "runs":
            return self._poll(parts[1])
        if method == "DELETE" and len(parts) == 2 and parts[0] == "recurringruns":
            if self.recurring_runs.pop(parts[1], None) is None:
                raise StandInError(404, f"recurring run {parts[1]} not found")
            return {}
        raise StandInError(404, f"the stand-in does not implement {method} {path}")

    def _check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)
            raise StandInError(400, message)

    def _upload(self, query: dict, body: bytes, ctype: str, pipeline_id: str | None) -> dict:
        spec = self._parse_package(_multipart_file(body, ctype, "uploadfile"))
        name = query.get("name") or spec["pipelineInfo"]["name"]
        if pipeline_id is None:
            self._check(not _filtered(self.pipelines, {"name_eq": name}),
                        f"a pipeline named {name!r} already exists")
            pipeline_id = str(uuid.uuid4())
            self.pipelines[pipeline_id] = {"pipeline_id": pipeline_id, "display_name": name,
                                           "created_at": NOW}
            self.versions[pipeline_id] = []
        self._check(pipeline_id in self.pipelines, f"unknown pipelineid {pipeline_id}")
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()),
                   "display_name": name, "created_at": NOW}
        self.versions[pipeline_id].append(version)
        self.specs[version["pipeline_version_id"]] = spec
        return version if query.get("pipelineid") else self.pipelines[pipeline_id]

    def _parse_package(self, text: str) -> dict:
        from google.protobuf import json_format
        from kfp.pipeline_spec import pipeline_spec_pb2

        try:
            docs = list(yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
            json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
            if len(docs) > 1:
                json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
        except Exception as exc:  # noqa: BLE001 - any parse failure is the finding
            self._check(False, f"uploaded package does not parse: {exc}")
        return docs[0]

    def _experiment(self, body: dict) -> dict:
        self._check(bool(body.get("display_name")), "experiment without display_name")
        experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": NOW}
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _run(self, body: dict) -> dict:
        self._check_run_body(body)
        run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": NOW}
        self.runs[run["run_id"]] = run
        self._polls[run["run_id"]] = itertools.count()
        return run

    def _check_run_body(self, body: dict) -> None:
        """A run's (or recurring run's) experiment, pipeline version and typed parameters."""
        if body.get("experiment_id") not in self.experiments:
            raise StandInError(404, f"experiment {body.get('experiment_id')} not found")
        ref = body.get("pipeline_version_reference") or {}
        spec = self.specs.get(ref.get("pipeline_version_id"))
        self._check(spec is not None, f"run refers to unknown pipeline version {ref}")
        inputs = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        for key, value in body.get("runtime_config", {}).get("parameters", {}).items():
            self._check(key in inputs, f"run parameter {key!r} is not a pipeline input")
            kind = inputs[key]["parameterType"]
            self._check(TYPE_CHECKS.get(kind, lambda v: True)(value),
                        f"run parameter {key}={value!r} is not {kind}")

    def _recurring_run(self, body: dict) -> dict:
        import kfp_server_api

        model = _client_model(self, body, "V2beta1RecurringRun")
        self._check(bool(model.display_name), "recurring run without display_name")
        trigger = body.get("trigger") or {}
        self._check(len(trigger) == 1, f"a recurring run needs one trigger, got {trigger}")
        cron = trigger.get("cron_schedule", {}).get("cron")
        if "cron_schedule" in trigger:
            self._check(isinstance(cron, str) and len(cron.split()) == 6,
                        f"cron {cron!r}: KFP's scheduler reads 6 fields, seconds first")
        else:
            interval = trigger.get("periodic_schedule", {}).get("interval_second")
            self._check(int(interval or 0) > 0, f"interval_second {interval!r} must be > 0")
        concurrency = int(body.get("max_concurrency") or 0)
        self._check(1 <= concurrency <= 10, f"max_concurrency {concurrency} must be 1 to 10")
        self._check(body.get("mode") in kfp_server_api.RecurringRunMode.allowable_values,
                    f"mode {body.get('mode')!r}")
        self._check_run_body(body)
        made = {**body, "recurring_run_id": str(uuid.uuid4()), "created_at": NOW,
                "status": "ENABLED" if body["mode"] == "ENABLE" else "DISABLED"}
        self.recurring_runs[made["recurring_run_id"]] = made
        return made

    def _poll(self, run_id: str) -> dict:
        if run_id not in self.runs:
            raise StandInError(404, f"run {run_id} not found")
        step = self.run_states[min(next(self._polls[run_id]), len(self.run_states) - 1)]
        state, tasks, error = (step, {}, "") if isinstance(step, str) else step
        details = [{"display_name": name, "state": task_state, "task_id": name}
                   for name, task_state in tasks.items()]
        run = {**self.runs[run_id], "state": state, "run_details": {"task_details": details}}
        if error:
            run["error"] = {"code": 2, "message": error}
        return run


def _client_model(standin: KfpStandIn, body: dict, kind: str) -> object:
    """``body`` as kfp's client model ``kind``; a field the model lacks is a problem."""
    import types

    import kfp_server_api

    model_class = getattr(kfp_server_api, kind)
    unknown = sorted(set(body) - set(model_class.attribute_map.values()))
    standin._check(not unknown, f"{kind} has no field(s) {unknown}")
    try:
        return kfp_server_api.ApiClient().deserialize(types.SimpleNamespace(
            data=json.dumps(body)), kind)
    except Exception as exc:  # noqa: BLE001 - any model error is the finding
        standin._check(False, f"body is not a {kind}: {exc}")


def _filtered(items: dict[str, dict], query: dict) -> list[dict]:
    """Items whose display_name equals the filter's (or ``name_eq``); all without a filter."""
    wanted = query.get("name_eq")
    if "filter" in query:
        predicates = json.loads(query["filter"]).get("predicates", [])
        wanted = next((p.get("stringValue") for p in predicates
                       if p.get("key") == "display_name"), None)
    return [item for item in items.values() if wanted is None or item["display_name"] == wanted]


def _multipart_file(body: bytes, ctype: str, field: str) -> str:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == field:
            return part.get_payload(decode=True).decode("utf-8")
    raise StandInError(400, f"multipart upload without {field!r}")


def _handler_for(standin: KfpStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            standin.authorizations.append(self.headers.get("Authorization"))
            try:
                status, answer = 200, standin.handle(method, url.path, query, body,
                                                     self.headers.get("Content-Type", ""))
            except StandInError as exc:
                status, answer = exc.status, {"error": str(exc), "message": str(exc), "code": 3}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

        def log_message(self, *args: object) -> None:
            pass

    return Handler
