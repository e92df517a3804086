"""Launch a step's workers on the Kubernetes cluster the step runs on, and wait for them.

:func:`launch_workers` is what a train/finetune step calls on a cluster with more than one
worker: it creates the JobSet or TFJob of :mod:`.manifests` (official ``kubernetes`` client),
owned by the step's own pod (a deleted run takes its workers with it; a step stopped by
SIGTERM, as a cancelled run's are, deletes them itself), named
after the KFP run and the step (a retried step follows the set it finds instead of starting a
second one), then watches it: workers scheduled/running, the chief's log lines in the step's
log, one clear line when a worker fails or cannot start, and a deadline.

The client and its models are imported inside the functions: compiling needs no
``kubernetes`` (``pip install tbpipe[run]`` brings it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.sigterm import on_sigterm
from tbpipe.components.training.launcher.manifests import (
    DIGEST_ANNOTATION,
    HOSTS_ENV,
    SET_LABEL,
    STEP_ANNOTATION,
    worker_set_manifest,
)
from tbpipe.components.training.launcher.placement import WorkerPlacement

#: Seconds between two looks at the set and its pods.
POLL_S = 2.0
#: A failed worker's last log lines quoted in the error.
TAIL_LINES = 5
#: Seconds the API may keep failing (5xx, 429, connection errors) before the step gives up.
API_GRACE_S = 120.0
#: The longest log line passed on (the rest is cut).
MAX_LINE = 1000
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
#: Pod labels naming the KFP run: KFP's run id, else the Argo workflow (one per run).
RUN_LABELS = ("pipeline/runid", "workflows.argoproj.io/workflow")
#: Container waiting reasons that mean a worker cannot start (and the hint for each).
STUCK_REASONS = MappingProxyType({
    "ImagePullBackOff": "check --registry and that the image was pushed (tbpipe build-images)",
    "ErrImagePull": "check --registry and that the image was pushed (tbpipe build-images)",
    "InvalidImageName": "check --registry",
    "CreateContainerConfigError": "a secret or config map the step uses is missing",
})


@dataclasses.dataclass(frozen=True)
class Engine:
    """The API of one engine: where its objects live and how it says it is done."""

    kind: str
    group: str
    version: str
    plural: str
    container: str
    index_keys: tuple[str, ...]  # pod annotations/labels holding the worker index
    succeeded: str  # the condition type of success
    install: str  # what a cluster without it needs

    @property
    def api(self) -> str:
        """``group/version``."""
        return f"{self.group}/{self.version}"


ENGINE_APIS = MappingProxyType({
    "jobset": Engine("JobSet", "jobset.x-k8s.io", "v1alpha2", "jobsets", "worker",
                     ("batch.kubernetes.io/job-completion-index",), "Completed",
                     "install the JobSet controller (docs/cluster.md) or compile with "
                     "--distributed-engine tfjob"),
    "tfjob": Engine("TFJob", "kubeflow.org", "v1", "tfjobs", "tensorflow",
                    ("training.kubeflow.org/replica-index",), "Succeeded",
                    "install the Kubeflow Training Operator v1 (docs/cluster.md) or compile "
                    "with --distributed-engine jobset"),
})


@dataclasses.dataclass(frozen=True)
class OwnPod:
    """The step's own pod, as the launcher needs it."""

    name: str
    uid: str
    run_id: str
    service_account: str | None
    env: tuple[Mapping, ...] = ()  # the step container's EnvVar entries, as the pod has them
    env_from: tuple[Mapping, ...] = ()  # its EnvFromSource entries (whole Secrets, ConfigMaps)

    @property
    def owner_reference(self) -> dict:
        """An owner reference to this pod: deleting it deletes the workers."""
        return {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid,
                "controller": False, "blockOwnerDeletion": False}


#: The step's variables a worker does not take: the worker set gives each its own.
NOT_CARRIED = frozenset({"TF_CONFIG", HOSTS_ENV})


def _plain(value: object) -> object:
    """A copy of a (read-only) pod spec value as plain dicts and lists, for a manifest."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def launch_workers(command: list[str], env: dict[str, str], workers: int, placement: str,
                   step: str, progress: Callable[[str], None], *,
                   poll_s: float = POLL_S) -> None:
    """Run ``command`` on ``workers`` pods through the cluster's JobSet or TFJob; wait.

    Args:
        command: The worker entry point (``python -m tbpipe.components.training.worker URI``).
        env: What every worker needs; a name the step's own container takes from a secret
            or the downward API is passed as that reference, not as its value.
        workers: How many workers (2 or more); worker 0 is the chief.
        placement: The ``worker_placement`` JSON the pipeline compiled (WorkerPlacement).
        step: The step's name, unique in its KFP run (a sweep's trial: ``train-trial-01``).
        progress: Called with each line to show in the step's log.
        poll_s: Seconds between two looks at the set.

    Raises:
        TbpipeError: one line: a worker failed (its index, pod and last log lines), cannot
            be scheduled or pull its image, the set was deleted (the run was cancelled), the
            deadline passed, or the cluster refused (RBAC, no such API).

    """
    spec = WorkerPlacement.from_json(placement)
    if workers < 2:
        raise InputError(f"workers={workers}: launch_workers needs 2 or more workers")
    launch = _Launch.connect(spec, progress, poll_s)
    try:
        me = launch.own_pod()
        manifest = worker_set_manifest(spec, command, launch.worker_env(env, me), workers,
                                       run_id=me.run_id, step=step,
                                       owners=[me.owner_reference],
                                       service_account=me.service_account,
                                       env_from=[_plain(e) for e in me.env_from])
        deadline = time.monotonic() + spec.deadline_s
        with on_sigterm(launch.stopped.set):  # a cancelled run: stop the workers too
            if launch.create_or_follow(manifest, me, deadline):
                launch.watch(manifest["metadata"]["name"], workers, deadline)
    finally:
        launch.close()


class _Launch:
    """One launch: the API clients, the namespace and what has been shown so far."""

    def __init__(self, api_client, spec: WorkerPlacement, namespace: str,  # noqa: ANN001
                 progress: Callable[[str], None], poll_s: float) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.spec, self.namespace, self.progress, self.poll_s = spec, namespace, progress, poll_s
        self.engine = ENGINE_APIS[spec.engine]
        self.lines: queue.Queue[str] = queue.Queue(maxsize=10_000)
        self.followed: str | None = None  # uid of the chief pod whose log is followed
        self.follower: threading.Thread | None = None
        self.stream = None  # the followed log's HTTP response (closed when done)
        self.api_client = api_client
        self.stopped = threading.Event()  # SIGTERM: the step is being stopped

    def close(self) -> None:
        """Stop following the chief's log; close the client's connections."""
        self._close_log()
        with contextlib.suppress(Exception):
            self.api_client.close()

    @classmethod
    def connect(cls, spec: WorkerPlacement, progress: Callable[[str], None],
                poll_s: float) -> _Launch:
        """Connect with the step's credentials (``common.kube_api.api_client``)."""
        from tbpipe.components.common.kube_api import api_client

        return cls(api_client("start the workers on"), spec, _namespace(), progress, poll_s)

    # --- API calls, each error one line -----------------------------------------------------
    def _call(self, doing: str, call: Callable, *args: object, **kwargs: object):  # noqa: ANN202
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call(*args, **kwargs)
        except ApiException as exc:
            raise _ApiError(exc.status, _api_message(exc, doing, self.namespace,
                                                     self.engine)) from None
        except HTTPError as exc:
            raise _ApiError(0, f"cannot reach the Kubernetes API to {doing} ({exc})") from None

    def _raw(self, doing: str, call: Callable, *args: object, **kwargs: object) -> dict:
        response = self._call(doing, call, *args, _preload_content=False, **kwargs)
        return json.loads(response.data)

    def _get_set(self, name: str) -> dict:
        e = self.engine
        return self._call(f"get {e.plural}", self.custom.get_namespaced_custom_object,
                          e.group, e.version, self.namespace, e.plural, name)

    def _delete_set(self, name: str) -> None:
        e = self.engine
        with contextlib.suppress(_ApiError):  # already gone is as good
            self._call(f"delete {e.plural}", self.custom.delete_namespaced_custom_object,
                       e.group, e.version, self.namespace, e.plural, name,
                       propagation_policy="Foreground")

    def own_pod(self) -> OwnPod:
        """The step's pod (KFP_POD_NAME, else HOSTNAME): uid, run, service account, env."""
        name = os.environ.get("KFP_POD_NAME") or os.environ.get("HOSTNAME")
        if not name:
            raise TbpipeError("cannot tell which pod this step runs in (KFP_POD_NAME and "
                              "HOSTNAME are unset); run the step as a KFP task")
        pod = self._raw("get pods", self.core.read_namespaced_pod, name, self.namespace)
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        labels = meta.get("labels") or {}
        run_id = next((labels[k] for k in RUN_LABELS if labels.get(k)), "")
        if not run_id:
            self.progress(f"pod {name} names no KFP run (labels {', '.join(RUN_LABELS)}): "
                          "the workers are named after the pod, so a retry starts new ones")
            run_id = name
        containers = spec.get("containers") or [{}]
        main = next((c for c in containers if c.get("name") == "main"), containers[0])
        return OwnPod(name=name, uid=meta.get("uid", ""), run_id=run_id,
                      service_account=spec.get("serviceAccountName"),
                      env=tuple(MappingProxyType(dict(e)) for e in main.get("env") or ()
                                if isinstance(e, dict) and e.get("name")),
                      env_from=tuple(MappingProxyType(dict(e))
                                     for e in main.get("envFrom") or () if isinstance(e, dict)))

    @staticmethod
    def worker_env(env: Mapping[str, str], me: OwnPod) -> list[dict]:
        """The step container's environment, then ``env``, as EnvVar entries.

        The workers get what the step was given (``--secret``'s keys, the store's endpoint,
        ``set_env_variable``s), as the pod spec has it: a Secret's key stays a reference to
        it, never its value; ``env`` adds to it, a name the step takes from a reference
        keeping that reference.
        """
        mine = {entry["name"]: entry for entry in me.env}
        carried = [_plain(entry) for name, entry in mine.items()
                   if name not in env and name not in NOT_CARRIED]
        given = [{"name": key, "valueFrom": _plain(mine[key]["valueFrom"])}
                 if mine.get(key, {}).get("valueFrom") else {"name": key, "value": str(value)}
                 for key, value in sorted(env.items())]
        return carried + given

    # --- create, or follow an earlier attempt's set ----------------------------------------
    def create_or_follow(self, manifest: dict, me: OwnPod, deadline: float) -> bool:
        """Create the set; if this step's earlier attempt made it, follow it instead.

        Returns False when that set has already completed (nothing to wait for). A set of an
        earlier attempt that failed, or that runs something else (another command, worker
        count or placement), is deleted and created again.
        """
        e, name = self.engine, manifest["metadata"]["name"]
        workers = _worker_count(manifest)
        while True:
            try:
                self._call(f"create {e.plural}", self.custom.create_namespaced_custom_object,
                           e.group, e.version, self.namespace, e.plural, manifest)
            except _ApiError as exc:
                if exc.status != 409:
                    raise
            else:
                self.progress(f"started {workers} workers: {e.kind} {name} in namespace "
                              f"{self.namespace}")
                return True
            try:
                found = self._get_set(name)
            except _ApiError as exc:
                if exc.status == 404:  # deleted in between: create it again
                    continue
                raise
            meta = found.get("metadata") or {}
            same = (meta.get("annotations") or {}).get(DIGEST_ANNOTATION) == \
                manifest["metadata"]["annotations"][DIGEST_ANNOTATION]
            state = _terminal(found, e)
            if same and state is None and not meta.get("deletionTimestamp"):
                owners = [o for o in meta.get("ownerReferences") or () if o.get("uid") != me.uid]
                self._call(f"patch {e.plural}", self.custom.patch_namespaced_custom_object,
                           e.group, e.version, self.namespace, e.plural, name,
                           {"metadata": {"ownerReferences": [*owners, me.owner_reference]}})
                self.progress(f"following {e.kind} {name}, started by an earlier attempt of "
                              "this step (no second set)")
                return True
            if same and state == e.succeeded:
                self.progress(f"{e.kind} {name} of an earlier attempt of this step already "
                              "completed")
                return False
            if not same and state is None:
                owner = self._live_owner(meta, me)
                if owner:
                    raise TbpipeError(
                        f"{e.kind} {name} runs other work for pod {owner} of this run, which "
                        f"is still running: give each multi-worker step a name of its own "
                        f"(step={(meta.get('annotations') or {}).get(STEP_ANNOTATION)!r})")
            why = "failed" if same else "runs something else"
            self.progress(f"{e.kind} {name} of an earlier attempt {why}: replacing it")
            self._delete_set(name)
            self._wait_gone(name, deadline)

    def _live_owner(self, meta: dict, me: OwnPod) -> str | None:
        """The name of a pod other than this one that owns the set and still runs."""
        for owner in meta.get("ownerReferences") or ():
            if owner.get("kind") != "Pod" or owner.get("uid") == me.uid:
                continue
            try:
                pod = self._raw("get pods", self.core.read_namespaced_pod, owner["name"],
                                self.namespace)
            except _ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            alive = (pod.get("status") or {}).get("phase") in ("Pending", "Running")
            if alive and (pod.get("metadata") or {}).get("uid") == owner.get("uid"):
                return owner["name"]
        return None

    def _wait_gone(self, name: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                self._get_set(name)
            except _ApiError as exc:
                if exc.status == 404:
                    return
                raise
            time.sleep(self.poll_s)
        raise TbpipeError(f"{self.engine.kind} {name} of an earlier attempt was not deleted "
                          f"within the deadline ({self.spec.deadline_s}s)")

    # --- watch ----------------------------------------------------------------------------
    def watch(self, name: str, workers: int, deadline: float) -> None:
        """Wait for the set to complete; show progress; one clear line if it cannot."""
        e = self.engine
        shown, stuck_since, api_down_since = None, {}, None
        try:
            while True:
                try:
                    found, pods = self._look(name)
                except _ApiError as exc:
                    if exc.status == 404:
                        raise TbpipeError(f"{e.kind} {name} was deleted while its workers ran "
                                          "(the run was cancelled, or someone deleted it); "
                                          "its workers are gone") from None
                    if not _transient(exc):
                        raise
                    api_down_since = api_down_since or time.monotonic()
                    if time.monotonic() - api_down_since > API_GRACE_S:
                        raise
                    time.sleep(self.poll_s)
                    continue
                api_down_since = None
                if (found.get("metadata") or {}).get("deletionTimestamp"):
                    raise TbpipeError(f"{e.kind} {name} is being deleted while its workers "
                                      "ran (the run was cancelled, or someone deleted it)")
                state = _counts(pods, workers, found)
                if state != shown:
                    self.progress(state)
                    shown = state
                self._follow_chief(pods)
                self._drain()
                terminal = _terminal(found, e)
                if terminal == e.succeeded:  # the chief has stopped: its stream ends
                    self._finish_log(wait_s=max(5.0, 2 * self.poll_s))
                    self.progress(f"{e.kind} {name}: all {workers} workers completed")
                    return
                if terminal is not None:  # the chief may still run: a short wait
                    self._finish_log(wait_s=self.poll_s)
                    raise TbpipeError(self._failure_line(name, found, pods))
                self._check_stuck(name, pods, stuck_since)
                if self.stopped.is_set():
                    self._delete_set(name)
                    raise TbpipeError(f"{e.kind} {name}: the step was stopped (SIGTERM: the run "
                                      "was cancelled, or the step's node is going away); its "
                                      "workers were deleted (a retry starts them again from "
                                      "the last checkpoint)")
                if time.monotonic() > deadline:
                    self._delete_set(name)
                    raise TbpipeError(f"{e.kind} {name}: the workers did not finish within the "
                                      f"deadline ({self.spec.deadline_s}s); they were deleted. "
                                      "Train for fewer epochs or compile with a longer "
                                      "--worker-deadline")
                self.stopped.wait(self.poll_s)
        finally:
            self._close_log()

    def _look(self, name: str) -> tuple[dict, list[dict]]:
        found = self._get_set(name)
        listed = self._raw("list pods", self.core.list_namespaced_pod, self.namespace,
                           label_selector=f"{SET_LABEL}={name}")
        pods = [p for p in listed.get("items") or () if not p["metadata"].get("deletionTimestamp")]
        return found, pods

    def _check_stuck(self, name: str, pods: list[dict], since: dict[str, float]) -> None:
        now, seen = time.monotonic(), set()
        for pod in pods:
            problem = _stuck(pod, self.spec)
            uid = pod["metadata"].get("uid") or pod["metadata"]["name"]
            if problem is None:
                continue
            seen.add(uid)
            first = since.setdefault(uid, now)
            if now - first >= self.spec.pending_timeout_s:
                self._delete_set(name)
                raise TbpipeError(f"worker {_index(pod, self.engine)} (pod "
                                  f"{pod['metadata']['name']}) {problem}; {self.engine.kind} "
                                  f"{name} was deleted")
        for uid in set(since) - seen:
            del since[uid]

    def _failure_line(self, name: str, found: dict, pods: list[dict]) -> str:
        e = self.engine
        condition = next((c for c in (found.get("status") or {}).get("conditions") or ()
                          if c.get("status") == "True" and c.get("type") == "Failed"), {})
        said = condition.get("message") or condition.get("reason") or "failed"
        failed = sorted((p for p in pods if _failed(p)), key=_finished_at)
        if not failed:
            return f"{e.kind} {name} failed ({said}); no failed worker pod is left to read"
        pod = failed[0]
        pod_name = pod["metadata"]["name"]
        try:
            text = self._call("get pods/log", self.core.read_namespaced_pod_log, pod_name,
                              self.namespace, container=e.container, tail_lines=TAIL_LINES)
            tail = [line.strip()[:MAX_LINE] for line in str(text).splitlines() if line.strip()]
        except _ApiError:
            tail = []
        ended = _terminated(pod)
        how = f" with exit code {ended['exitCode']}" if "exitCode" in ended else ""
        reason = ended.get("reason") or (pod.get("status") or {}).get("reason")
        how += f" ({reason})" if reason else ""
        return (f"worker {_index(pod, e)} (pod {pod_name}) failed{how}; last log lines: "
                f"{' | '.join(tail[-TAIL_LINES:]) or '(none)'}; {e.kind} {name}: {said}")

    # --- the chief's log ------------------------------------------------------------------
    def _follow_chief(self, pods: list[dict]) -> None:
        chief = next((p for p in pods if _index(p, self.engine) == 0
                      and (p.get("status") or {}).get("phase") in ("Running", "Succeeded",
                                                                   "Failed")), None)
        if chief is None or chief["metadata"].get("uid") == self.followed:
            return
        self._close_log()
        self.followed = chief["metadata"].get("uid")
        try:
            self.stream = self._call("get pods/log", self.core.read_namespaced_pod_log,
                                     chief["metadata"]["name"], self.namespace,
                                     container=self.engine.container, follow=True,
                                     _preload_content=False)
        except _ApiError as exc:
            self.progress(f"cannot follow the chief's log: {exc}")
            return
        self.follower = threading.Thread(target=_pump, args=(self.stream, self.lines),
                                         name="tbpipe-chief-log", daemon=True)
        self.follower.start()

    def _drain(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            self.progress(f"worker 0: {line}")

    def _finish_log(self, wait_s: float) -> None:
        """Let the chief's log stream end (it does when its container stops), then show it."""
        if self.follower is not None:
            self.follower.join(timeout=wait_s)
        self._drain()

    def _close_log(self) -> None:
        """Stop following: shut the socket down first, which wakes the reading thread."""
        stream, self.stream = self.stream, None
        if stream is None:
            return
        with contextlib.suppress(Exception):
            if hasattr(stream, "shutdown"):  # urllib3 >= 2.3; older: close() alone
                stream.shutdown()
        if self.follower is not None:
            self.follower.join(timeout=1.0)
        with contextlib.suppress(Exception):
            stream.close()


class _ApiError(TbpipeError):
    """A refused or failed API call; ``status`` 0: no answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _pump(stream, lines: queue.Queue) -> None:  # noqa: ANN001 - a urllib3 response
    """Copy a followed log's lines into ``lines`` until the stream ends or is closed."""
    with contextlib.suppress(Exception):  # closed under it: the launch is over
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.strip():
                lines.put(line[:MAX_LINE])


def _namespace() -> str:
    """KFP's (``KFP_NAMESPACE``), else the service account's, else the kubeconfig's."""
    for name in ("KFP_NAMESPACE", "POD_NAMESPACE"):
        if os.environ.get(name):
            return os.environ[name]
    with contextlib.suppress(OSError):
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip()
    from kubernetes import config

    with contextlib.suppress(Exception):
        _, active = config.list_kube_config_contexts(os.environ.get("KUBECONFIG") or None)
        if active["context"].get("namespace"):
            return active["context"]["namespace"]
    return "default"


def _api_message(exc, doing: str, namespace: str, engine: Engine) -> str:  # noqa: ANN001
    try:
        said = json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        said = exc.reason
    line = f"the Kubernetes API refused to {doing} in namespace {namespace}: {exc.status} {said}"
    if exc.status in (401, 403):
        return f"{line}; give the step's service account the role of deploy/rbac (docs/cluster.md)"
    if exc.status == 404 and doing.startswith("create"):
        return f"{line}; the {engine.kind} API ({engine.api}) is not installed: {engine.install}"
    return line


def _transient(exc: _ApiError) -> bool:
    return exc.status in (0, 429) or exc.status >= 500


def _worker_count(manifest: dict) -> int:
    if manifest["kind"] == "JobSet":
        return manifest["spec"]["replicatedJobs"][0]["template"]["spec"]["parallelism"]
    return manifest["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]


def _terminal(found: dict, engine: Engine) -> str | None:
    """The set's final condition type (success or ``Failed``), None while it runs."""
    for condition in (found.get("status") or {}).get("conditions") or ():
        if condition.get("status") == "True" and condition.get("type") in (engine.succeeded,
                                                                           "Failed"):
            return condition["type"]
    return None


def _index(pod: dict, engine: Engine) -> int | None:
    meta = pod.get("metadata") or {}
    for key in engine.index_keys:
        for source in (meta.get("annotations") or {}, meta.get("labels") or {}):
            if str(source.get(key, "")).isdigit():
                return int(source[key])
    return None


def _counts(pods: list[dict], workers: int, found: dict) -> str:
    scheduled = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName") or any(
        c.get("type") == "PodScheduled" and c.get("status") == "True"
        for c in (p.get("status") or {}).get("conditions") or ()))
    running = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
    done = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Succeeded")
    line = f"workers: {min(scheduled, workers)}/{workers} scheduled, {running} running"
    if done:
        line += f", {done} done"
    restarts = (found.get("status") or {}).get("restarts")
    if restarts:
        line += f" (restart {restarts} of the set)"
    return line


def _stuck(pod: dict, spec: WorkerPlacement) -> str | None:
    """Why a pending worker cannot start (unschedulable, image or config), else None."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            gpus = (f"{spec.gpu_count} GPU(s)" + (f" of type {spec.gpu_type}" if spec.gpu_type
                                                  else "")) if spec.gpu_count else "its CPU/memory"
            return (f"cannot be scheduled: {condition.get('message') or 'no node fits'}; each "
                    f"worker needs {gpus}: add nodes, or ask for fewer workers or GPUs")
    for container in status.get("containerStatuses") or ():
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return (f"cannot start: {waiting['reason']} "
                    f"({waiting.get('message') or container.get('image')}); "
                    f"{STUCK_REASONS[waiting['reason']]}")
    return None


def _terminated(pod: dict) -> dict:
    for container in (pod.get("status") or {}).get("containerStatuses") or ():
        state = container.get("state") or {}
        last = container.get("lastState") or {}
        found = state.get("terminated") or last.get("terminated")
        if found:
            return found
    return {}


def _failed(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") == "Failed" or \
        _terminated(pod).get("exitCode") not in (None, 0)


def _finished_at(pod: dict) -> str:
    return str(_terminated(pod).get("finishedAt") or "9999")

