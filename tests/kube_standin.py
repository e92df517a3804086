"""KubeStandIn: a SMALL STAND-IN for the Kubernetes API server. A TEST DOUBLE.

It is not Kubernetes and runs nothing: no scheduler, no JobSet controller, no Training
Operator. It answers, on 127.0.0.1, the few REST paths the official ``kubernetes`` client calls
on the ``launch_workers`` path, keeps the objects in memory, and plays a controller only as a
test scripts it (``script``: one function per look at the set):

    GET    /api/v1/namespaces/{ns}/pods/{name}
    GET    /api/v1/namespaces/{ns}/pods?labelSelector=KEY=VALUE
    GET    /api/v1/namespaces/{ns}/pods/{name}/log   (tailLines; follow=true streams the lines
                                                     until the pod is no longer Running)
    POST   /apis/{group}/{version}/namespaces/{ns}/{plural}            (409 if it exists)
    GET    /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}
    PATCH  /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}     (merge patch only)
    DELETE /apis/{group}/{version}/namespaces/{ns}/{plural}/{name}     (and the set's pods)

Checks (a failure answers 400/415 and is appended to ``problems``): a created object's
``apiVersion``/``kind`` match its path and it has a name; a PATCH (a JobSet's, or
``tbpipe models --inference-service``'s of a KServe InferenceService) is
``application/merge-patch+json``; every request carries the kubeconfig's bearer token. A
plural not in ``installed`` answers 404 (its CRD is not installed).
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml

TOKEN = "stand-in-token"
GO_TRUE = ("1", "t", "T", "true", "True", "TRUE")  # what the server's strconv.ParseBool takes
KINDS = {"jobsets": ("jobset.x-k8s.io/v1alpha2", "JobSet"), "tfjobs": ("kubeflow.org/v1", "TFJob"),
         "inferenceservices": ("serving.kserve.io/v1beta1", "InferenceService")}


class StandInError(Exception):
    """An error answer, shaped like the API server's ``Status``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class KubeStandIn:
    """The stand-in server's state; ``with KubeStandIn() as kube:`` serves on ``kube.url``."""

    def __init__(self, namespace: str = "team") -> None:
        self.namespace = namespace
        self.installed = {"jobsets", "tfjobs", "inferenceservices"}
        self.sets: dict[tuple[str, str], dict] = {}  # (plural, name) -> object
        self.pods: dict[str, dict] = {}
        self.logs: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str]] = []
        self.problems: list[str] = []
        self.created: list[tuple[str, str]] = []  # (plural, name) of every 201
        self.deleted: list[tuple[str, str]] = []
        self.patches: list[tuple[str, str, dict]] = []  # (plural, name, body) of every PATCH
        self.script: list[Callable[[KubeStandIn, str], None]] = []
        self.failures: list[tuple[int, str, str]] = []  # (status, method, path prefix)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    # --- serving --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> KubeStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig naming this server, its token and the namespace."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
            "users": [{"name": "stand-in", "user": {"token": TOKEN}}],
            "contexts": [{"name": "stand-in", "context": {
                "cluster": "stand-in", "user": "stand-in", "namespace": self.namespace}}]}))
        return path

    def fail(self, status: int, method: str, path_prefix: str, times: int = 1) -> None:
        """Answer ``status`` to the next ``times`` requests of ``method`` under the prefix."""
        self.failures.extend([(status, method, path_prefix)] * times)

    # --- what a test sets up --------------------------------------------------------------
    def add_step_pod(self, name: str, run_id: str | None = "run-1",
                     env: list[dict] | None = None, service_account: str = "pipeline-runner",
                     env_from: list[dict] | None = None) -> dict:
        """The pod the step runs in, as KFP's executor pod would look."""
        labels = {"pipeline/runid": run_id} if run_id else {}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": self.namespace, "uid": str(uuid.uuid4()),
                            "labels": labels},
               "spec": {"serviceAccountName": service_account,
                        "containers": [{"name": "main", "image": "step-image",
                                        "env": env or [], "envFrom": env_from or []}]},
               "status": {"phase": "Running"}}
        self.pods[name] = pod
        return pod

    def put_set(self, plural: str, obj: dict) -> None:
        """An object already there (made by an earlier attempt)."""
        obj = copy.deepcopy(obj)
        obj["metadata"].setdefault("uid", str(uuid.uuid4()))
        obj["metadata"]["namespace"] = self.namespace
        self.sets[(plural, obj["metadata"]["name"])] = obj

    # --- the scripted controller ----------------------------------------------------------
    def the_set(self, name: str) -> tuple[str, dict]:
        """``(plural, object)`` of the set called ``name``."""
        ((plural, obj),) = [(p, o) for (p, n), o in self.sets.items() if n == name]
        return plural, obj

    def start_pods(self, name: str, phase: str = "Running") -> list[str]:
        """Create the set's worker pods from its template, as its controller would."""
        plural, obj = self.the_set(name)
        if plural == "jobsets":
            job = obj["spec"]["replicatedJobs"][0]
            count = job["template"]["spec"]["parallelism"]
            template = job["template"]["spec"]["template"]
            names = [f"{name}-{job['name']}-0-{i}-{uuid.uuid4().hex[:5]}" for i in range(count)]
            index_key = "batch.kubernetes.io/job-completion-index"
        else:
            replica = obj["spec"]["tfReplicaSpecs"]["Worker"]
            count, template = replica["replicas"], replica["template"]
            names = [f"{name}-worker-{i}" for i in range(count)]
            index_key = "training.kubeflow.org/replica-index"
        for index, pod_name in enumerate(names):
            labels = {**template["metadata"]["labels"], index_key: str(index)}
            annotations = {index_key: str(index)} if plural == "jobsets" else {}
            self.pods[pod_name] = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod_name, "namespace": self.namespace,
                             "uid": str(uuid.uuid4()), "labels": labels,
                             "annotations": annotations},
                "spec": copy.deepcopy(template["spec"]), "status": {}}
            self.set_phase(pod_name, phase)
        return names

    def worker_pods(self, name: str) -> list[str]:
        """The set's pods, worker index order."""
        def index(pod: dict) -> int:
            labels = pod["metadata"]["labels"]
            return int(labels.get("batch.kubernetes.io/job-completion-index",
                                  labels.get("training.kubeflow.org/replica-index", 0)))
        pods = [p for p in self.pods.values()
                if p["metadata"]["labels"].get("tbpipe/worker-set") == name]
        return [p["metadata"]["name"] for p in sorted(pods, key=index)]

    def set_phase(self, pod_name: str, phase: str, exit_code: int | None = None,
                  waiting: tuple[str, str] | None = None, unschedulable: str = "") -> None:
        """Give a pod a phase (and a container state)."""
        pod = self.pods[pod_name]
        container = pod["spec"]["containers"][0]
        status = {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "True"}]}
        if unschedulable:
            status["conditions"] = [{"type": "PodScheduled", "status": "False",
                                     "reason": "Unschedulable", "message": unschedulable}]
        state: dict = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        if waiting:
            state = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        elif exit_code is not None:
            state = {"terminated": {"exitCode": exit_code,
                                    "reason": "Completed" if exit_code == 0 else "Error",
                                    "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ")}}
        if phase != "Pending" or waiting:
            status["containerStatuses"] = [{"name": container["name"],
                                            "image": container["image"], "state": state}]
        pod["status"] = status

    def finish(self, name: str, condition: str, message: str = "") -> None:
        """Give the set its final condition (``Completed``/``Succeeded`` or ``Failed``)."""
        _, obj = self.the_set(name)
        obj.setdefault("status", {}).setdefault("conditions", []).append(
            {"type": condition, "status": "True", "message": message or condition})

    def remove(self, name: str) -> None:
        """Delete the set and its pods, as garbage collection of a cancelled run would."""
        plural, _ = self.the_set(name)
        del self.sets[(plural, name)]
        for pod_name in self.worker_pods(name):
            del self.pods[pod_name]

    # --- endpoints ------------------------------------------------------------------------
    def handle(self, method: str, path: str, query: dict, body: bytes, headers) -> dict:  # noqa: ANN001
        """Route one request; returns the JSON answer or raises StandInError."""
        with self._lock:
            self.requests.append((method, path))
            if headers.get("Authorization") != f"Bearer {TOKEN}":
                self._problem(401, "Unauthorized", f"{method} {path} without the token")
            for failure in self.failures:
                status, fail_method, prefix = failure
                if method == fail_method and path.startswith(prefix):
                    self.failures.remove(failure)
                    raise StandInError(status, "InternalError", f"stand-in told to answer "
                                                                f"{status}")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "v1"] and parts[2:3] == ["namespaces"] \
                    and parts[4:5] == ["pods"]:
                return self._pods(method, parts[3], parts[5:], query)
            if parts[0] == "apis" and len(parts) >= 6 and parts[3] == "namespaces":
                return self._sets(method, parts, body, headers)
            raise StandInError(404, "NotFound", f"the stand-in does not implement {method} "
                                                f"{path}")

    def _problem(self, status: int, reason: str, message: str) -> None:
        self.problems.append(message)
        raise StandInError(status, reason, message)

    def _pods(self, method: str, namespace: str, rest: list[str], query: dict) -> dict:
        if method != "GET" or namespace != self.namespace:
            raise StandInError(404, "NotFound", "no such pods")
        if not rest:
            key, _, value = query.get("labelSelector", "").partition("=")
            items = [p for p in self.pods.values()
                     if not key or p["metadata"].get("labels", {}).get(key) == value]
            return {"kind": "PodList", "apiVersion": "v1", "items": copy.deepcopy(items)}
        pod = self.pods.get(rest[0])
        if pod is None:
            raise StandInError(404, "NotFound", f'pods "{rest[0]}" not found')
        if rest[1:] == ["log"]:
            lines = self.logs.get(rest[0], [])
            if "tailLines" in query:
                lines = lines[-int(query["tailLines"]):]
            return {"_text": "".join(line + "\n" for line in lines)}
        return copy.deepcopy(pod)

    def _sets(self, method: str, parts: list[str], body: bytes, headers) -> dict:  # noqa: ANN001
        group, version, namespace, plural = parts[1], parts[2], parts[4], parts[5]
        if plural not in self.installed or namespace != self.namespace or \
                KINDS[plural][0] != f"{group}/{version}":
            raise StandInError(404, "NotFound", f"the server could not find the requested "
                                                f"resource ({plural}.{group})")
        if method == "POST" and len(parts) == 6:
            obj = json.loads(body)
            api_version, kind = KINDS[plural]
            if obj.get("apiVersion") != api_version or obj.get("kind") != kind or \
                    not obj.get("metadata", {}).get("name"):
                self._problem(400, "BadRequest", f"{plural}: wrong apiVersion/kind/name")
            name = obj["metadata"]["name"]
            if (plural, name) in self.sets:
                raise StandInError(409, "AlreadyExists",
                                   f'{plural}.{group} "{name}" already exists')
            obj["metadata"].update(uid=str(uuid.uuid4()), namespace=self.namespace)
            self.sets[(plural, name)] = obj
            self.created.append((plural, name))
            return copy.deepcopy(obj)
        if len(parts) != 7:
            raise StandInError(405, "MethodNotAllowed", "not here")
        name = parts[6]
        if (plural, name) not in self.sets:
            raise StandInError(404, "NotFound", f'{plural}.{group} "{name}" not found')
        if method == "GET":
            if self.script:
                self.script.pop(0)(self, name)
            if (plural, name) not in self.sets:  # the script removed it
                raise StandInError(404, "NotFound", f'{plural}.{group} "{name}" not found')
            return copy.deepcopy(self.sets[(plural, name)])
        if method == "PATCH":
            if headers.get("Content-Type") != "application/merge-patch+json":
                self._problem(415, "UnsupportedMediaType",
                              f"PATCH as {headers.get('Content-Type')}")
            self.patches.append((plural, name, json.loads(body)))
            self.sets[(plural, name)] = merge_patch(self.sets[(plural, name)], json.loads(body))
            return copy.deepcopy(self.sets[(plural, name)])
        if method == "DELETE":
            self.deleted.append((plural, name))
            self.remove(name)
            return {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        raise StandInError(405, "MethodNotAllowed", method)

    def stream_log(self, pod_name: str, write: Callable[[bytes], None]) -> None:
        """``follow=true``: the lines as they come, until the pod stops running."""
        sent = 0
        for _ in itertools.count():
            with self._lock:
                lines = list(self.logs.get(pod_name, []))
                pod = self.pods.get(pod_name)
                running = pod is not None and pod["status"].get("phase") in ("Running",
                                                                             "Pending")
            for line in lines[sent:]:
                write(line.encode() + b"\n")
            sent = len(lines)
            if not running or self._stopping.is_set():
                return
            time.sleep(0.01)


def _handler_for(kube: KubeStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and chunked log streams

        def log_message(self, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if method == "GET" and url.path.endswith("/log") and query.get("follow") in GO_TRUE:
                try:
                    kube.handle(method, url.path, query, body, self.headers)
                except StandInError as exc:
                    return self._answer(exc.status, _status(exc))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")  # as the API server streams
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True

                def write(data: bytes) -> None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                pod_name = url.path.rstrip("/").split("/")[-2]
                try:
                    kube.stream_log(pod_name, write)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return None
            try:
                answer = kube.handle(method, url.path, query, body, self.headers)
            except StandInError as exc:
                return self._answer(exc.status, _status(exc))
            status = 201 if method == "POST" else 200
            if "_text" in answer:
                return self._answer(status, answer["_text"].encode(), "text/plain")
            return self._answer(status, answer)

        def _answer(self, status: int, answer: dict | bytes,
                    ctype: str = "application/json") -> None:
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def do_PATCH(self) -> None:  # noqa: N802
            self._serve("PATCH")

        def do_DELETE(self) -> None:  # noqa: N802
            self._serve("DELETE")

    return Handler


def _status(exc: StandInError) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": str(exc),
            "reason": exc.reason, "code": exc.status}
