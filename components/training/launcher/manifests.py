"""The JobSet and TFJob a multi-worker step creates: pure builders, no Kubernetes client.

``tbpipe workers-manifest`` prints what these return; the launcher creates it. Each worker
pod has the step's image, its GPU placement, the environment and the worker command.

JobSet (``jobset.x-k8s.io/v1alpha2``): one replicated job of N indexed pods (``Indexed``
completion mode: each pod's ``JOB_COMPLETION_INDEX`` is its worker index), a headless
service (``network.enableDNSHostnames``) through which worker ``i`` is
``{set}-worker-0-{i}.{set}``, handed to every pod as ``TBPIPE_WORKER_HOSTS``; a worker lost
fails its Job (``backoffLimit: 0``) and the failure policy restarts the whole set (all
workers resume together from the chief's checkpoint) up to ``maxRestarts`` times.

TFJob (``kubeflow.org/v1``): N ``Worker`` replicas (worker 0 is the chief), ``TF_CONFIG``
set by the operator; restart policy ``ExitCode``: a worker killed (exit code 128 and more,
e.g. a preempted node) is restarted, an error of the step (exit code 1) fails the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence

from tbpipe.components.training.launcher.placement import WORKER_PORT, WorkerPlacement

GPU_RESOURCE = "nvidia.com/gpu"
#: The one replicated job of a JobSet (its pods' host names start with ``{set}-worker-``).
REPLICATED_JOB = "worker"
#: Every worker pod has this label: ``tbpipe/worker-set={set name}`` selects a set's pods.
SET_LABEL = "tbpipe/worker-set"
#: Annotations on the set: the KFP run and step it belongs to, and the digest of what it runs.
RUN_ANNOTATION = "tbpipe/run-id"
STEP_ANNOTATION = "tbpipe/step"
DIGEST_ANNOTATION = "tbpipe/spec-digest"
HOSTS_ENV = "TBPIPE_WORKER_HOSTS"


def worker_set_name(run_id: str, step: str) -> str:
    """A set's name, the same for every attempt of one step of one KFP run.

    ``tbpipe-{step}-{digest}``: a DNS label starting with a letter, short enough that the
    JobSet's pod host names (``{name}-worker-0-{i}``) stay under 63 characters.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")[:20].strip("-") or "step"
    digest = hashlib.sha256(f"{run_id}\0{step}".encode()).hexdigest()[:10]
    return f"tbpipe-{slug}-{digest}"


def worker_hosts(name: str, workers: int, port: int = WORKER_PORT) -> list[str]:
    """``host:port`` of each JobSet worker, index order, from its headless-service DNS."""
    return [f"{name}-{REPLICATED_JOB}-0-{index}.{name}:{port}" for index in range(workers)]


def env_vars(env: Mapping[str, str]) -> list[dict]:
    """Kubernetes ``EnvVar`` entries of plain values, sorted by name."""
    return [{"name": key, "value": str(value)} for key, value in sorted(env.items())]


#: WorkerPlacement fields that are the launcher's own waits, not what the workers run.
WAITS = ("deadline_s", "pending_timeout_s")


def spec_digest(command: Sequence[str], workers: int, placement: WorkerPlacement) -> str:
    """What a set runs (command, workers, placement but the waits), as a digest.

    A retried step follows an earlier attempt's set only if its digest is this one. The
    environment is not in it: a retry's may differ in what does not matter (its pod's name).
    """
    where = {k: v for k, v in dataclasses.asdict(placement).items() if k not in WAITS}
    text = json.dumps([list(command), workers, where], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "tbpipe-worker", "app.kubernetes.io/part-of": "tbpipe",
            SET_LABEL: name}


def _metadata(name: str, run_id: str, step: str, digest: str,
              owners: Sequence[Mapping] = ()) -> dict:
    metadata = {"name": name, "labels": _labels(name),
                "annotations": {RUN_ANNOTATION: run_id, STEP_ANNOTATION: step,
                                DIGEST_ANNOTATION: digest}}
    if owners:
        metadata["ownerReferences"] = [dict(owner) for owner in owners]
    return metadata


def worker_pod_spec(placement: WorkerPlacement, command: Sequence[str], env: Sequence[Mapping],
                    *, container: str, port_name: str, service_account: str | None = None,
                    env_from: Sequence[Mapping] = ()) -> dict:
    """One worker's pod spec: image, GPUs, node selectors, toleration, resources, env, command.

    Args:
        placement: Where and how big.
        command: The worker entry point.
        env: Kubernetes ``EnvVar`` entries (plain values or ``valueFrom`` references).
        container: The container's name (TFJob's operator looks for ``tensorflow``).
        port_name: The name of the worker port (TFJob: ``tfjob-port``).
        service_account: The pods' service account (the step's own; None: the default).
        env_from: Kubernetes ``EnvFromSource`` entries (the step's whole-Secret env).

    """
    requests = {k: v for k, v in (("cpu", placement.cpu_request),
                                  ("memory", placement.memory_request)) if v}
    limits = {k: v for k, v in (("cpu", placement.cpu_limit),
                                ("memory", placement.memory_limit)) if v}
    selectors = {}
    if placement.gpu_count:
        limits[GPU_RESOURCE] = str(placement.gpu_count)
        if placement.gpu_node_selector_key and placement.gpu_type:
            selectors[placement.gpu_node_selector_key] = placement.gpu_type
    selectors.update(dict(placement.node_selectors))
    mounts = [{"name": f"volume-{i}", "mountPath": path}
              for i, (_, path) in enumerate(placement.volumes)]
    worker = {"name": container, "image": placement.image, "command": list(command),
              "env": [dict(entry) for entry in env],
              "ports": [{"name": port_name, "containerPort": WORKER_PORT, "protocol": "TCP"}],
              "resources": {key: value for key, value in (("requests", requests),
                                                          ("limits", limits)) if value}}
    if env_from:
        worker["envFrom"] = [dict(entry) for entry in env_from]
    if mounts:
        worker["volumeMounts"] = mounts
    spec = {"restartPolicy": "Never", "containers": [worker],
            "securityContext": {"runAsUser": placement.run_as_user,
                                "runAsGroup": placement.run_as_user, "runAsNonRoot": True}}
    if service_account:
        spec["serviceAccountName"] = service_account
    if selectors:
        spec["nodeSelector"] = selectors
    if placement.gpu_count:
        spec["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists",
                                "effect": "NoSchedule"}]
    if placement.volumes:
        spec["volumes"] = [{"name": f"volume-{i}", "persistentVolumeClaim": {"claimName": claim}}
                           for i, (claim, _) in enumerate(placement.volumes)]
    return spec


def jobset_manifest(name: str, placement: WorkerPlacement, command: Sequence[str],
                    env: Sequence[Mapping], workers: int, *, run_id: str, step: str,
                    owners: Sequence[Mapping] = (), service_account: str | None = None,
                    env_from: Sequence[Mapping] = ()) -> dict:
    """The JobSet of ``workers`` indexed worker pods (see the module's docstring)."""
    hosts = {"name": HOSTS_ENV, "value": ",".join(worker_hosts(name, workers))}
    pod = worker_pod_spec(placement, command, [*env, hosts], container="worker",
                          port_name="worker", service_account=service_account,
                          env_from=env_from)
    job = {"parallelism": workers, "completions": workers, "completionMode": "Indexed",
           "backoffLimit": 0,
           "template": {"metadata": {"labels": _labels(name)}, "spec": pod}}
    spec = {
        "failurePolicy": {"maxRestarts": placement.max_restarts},
        "network": {"enableDNSHostnames": True, "subdomain": name,
                    "publishNotReadyAddresses": True},
        "successPolicy": {"operator": "All", "targetReplicatedJobs": [REPLICATED_JOB]},
        "replicatedJobs": [{"name": REPLICATED_JOB, "replicas": 1, "template": {
            "metadata": {"labels": _labels(name)}, "spec": job}}],
    }
    return {"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": _metadata(name, run_id, step,
                                  spec_digest(command, workers, placement), owners),
            "spec": spec}


def tfjob_manifest(name: str, placement: WorkerPlacement, command: Sequence[str],
                   env: Sequence[Mapping], workers: int, *, run_id: str, step: str,
                   owners: Sequence[Mapping] = (), service_account: str | None = None,
                   env_from: Sequence[Mapping] = ()) -> dict:
    """The TFJob of ``workers`` Worker replicas, worker 0 the chief (see the docstring)."""
    pod = worker_pod_spec(placement, command, env, container="tensorflow",
                          port_name="tfjob-port", service_account=service_account,
                          env_from=env_from)
    spec = {
        "runPolicy": {"backoffLimit": placement.max_restarts, "cleanPodPolicy": "None"},
        "tfReplicaSpecs": {"Worker": {
            "replicas": workers, "restartPolicy": "ExitCode",
            "template": {"metadata": {"labels": _labels(name)}, "spec": pod}}},
    }
    return {"apiVersion": "kubeflow.org/v1", "kind": "TFJob",
            "metadata": _metadata(name, run_id, step,
                                  spec_digest(command, workers, placement), owners),
            "spec": spec}


def worker_set_manifest(placement: WorkerPlacement, command: Sequence[str],
                        env: Sequence[Mapping], workers: int, *, run_id: str, step: str,
                        owners: Sequence[Mapping] = (),
                        service_account: str | None = None,
                        env_from: Sequence[Mapping] = ()) -> dict:
    """The JobSet or TFJob (``placement.engine``) of one step of one KFP run."""
    build = jobset_manifest if placement.engine == "jobset" else tfjob_manifest
    return build(worker_set_name(run_id, step), placement, command, env, workers,
                 run_id=run_id, step=step, owners=owners, service_account=service_account,
                 env_from=env_from)
