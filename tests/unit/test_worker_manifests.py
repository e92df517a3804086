"""The JobSet and TFJob of a multi-worker step, against their CRDs' fields and the GPU placement.

The two schemas below are written out from the upstream Go types (the fields, their JSON
names, types, enums and which are required), as test_deploy.py does for the Tensorboard CR;
the pods and the JobSet's Job template are validated with kubernetes-validate (strict).
No cluster, no TensorFlow.
"""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tbpipe.components.common.errors import InputError
from tbpipe.components.training.launcher.manifests import (
    HOSTS_ENV,
    jobset_manifest,
    tfjob_manifest,
    worker_hosts,
    worker_set_manifest,
    worker_set_name,
)
from tbpipe.components.training.launcher.placement import WORKER_PORT, WorkerPlacement
from tbpipe.pipelines.placement import CompileOptions, Resources, worker_placement

KUBERNETES_VERSION = "1.30.0"
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # DNS-1035: a Service (the JobSet subdomain) name
COMMAND = ["python", "-m", "tbpipe.components.training.worker", "gs://b/task.json"]

_INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META = {
    "type": "object", "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
        "namespace": {"type": "string"}, "labels": _STRING_MAP, "annotations": _STRING_MAP,
        "ownerReferences": {"type": "array", "items": {
            "type": "object", "required": ["apiVersion", "kind", "name", "uid"],
            "additionalProperties": False,
            "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                           "name": {"type": "string"}, "uid": {"type": "string"},
                           "controller": {"type": "boolean"},
                           "blockOwnerDeletion": {"type": "boolean"}}}}}}
_TEMPLATE = {"type": "object", "additionalProperties": False,  # a Job/PodTemplateSpec: the
             "properties": {"metadata": {"type": "object"},  # spec inside is validated
                            "spec": {"type": "object"}}}      # by kubernetes-validate
#: kubernetes-sigs/jobset api/jobset/v1alpha2/jobset_types.go: JobSetSpec, ReplicatedJob,
#: Network, SuccessPolicy, FailurePolicy (+ FailurePolicyRule), StartupPolicy, Coordinator.
JOBSET_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "jobset.x-k8s.io/v1alpha2"}, "kind": {"const": "JobSet"},
        "metadata": _OBJECT_META,
        "spec": {"type": "object", "additionalProperties": False, "properties": {
            "replicatedJobs": {"type": "array", "items": {
                "type": "object", "required": ["name", "template"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"}, "groupName": {"type": "string"},
                    "template": _TEMPLATE, "replicas": _INT32,
                    "dependsOn": {"type": "array", "maxItems": 5, "items": {
                        "type": "object", "required": ["name", "status"],
                        "properties": {"name": {"type": "string"},
                                       "status": {"enum": ["Ready", "Complete"]}}}}}}},
            "network": {"type": "object", "additionalProperties": False, "properties": {
                "enableDNSHostnames": {"type": "boolean"}, "subdomain": {"type": "string"},
                "publishNotReadyAddresses": {"type": "boolean"}}},
            "successPolicy": {"type": "object", "required": ["operator"],
                              "additionalProperties": False, "properties": {
                                  "operator": {"enum": ["All", "Any"]},
                                  "targetReplicatedJobs": _STRINGS}},
            "failurePolicy": {"type": "object", "additionalProperties": False, "properties": {
                "maxRestarts": _INT32,
                "restartStrategy": {"enum": ["Recreate", "BlockingRecreate", "InPlaceRestart"]},
                "rules": {"type": "array", "items": {
                    "type": "object", "required": ["name", "action"],
                    "additionalProperties": False, "properties": {
                        "name": {"type": "string"},
                        "action": {"enum": ["FailJobSet", "RestartJobSet",
                                            "RestartJobSetAndIgnoreMaxRestarts", "RestartJob",
                                            "RestartJobAndIgnoreMaxRestarts"]},
                        "onJobFailureReasons": _STRINGS,
                        "onJobFailureMessagePatterns": _STRINGS,
                        "targetReplicatedJobs": _STRINGS}}}}},
            "startupPolicy": {"type": "object", "required": ["startupPolicyOrder"],
                              "properties": {"startupPolicyOrder": {"enum": ["AnyOrder",
                                                                             "InOrder"]}}},
            "suspend": {"type": "boolean"},
            "coordinator": {"type": "object", "required": ["replicatedJob"], "properties": {
                "replicatedJob": {"type": "string"}, "jobIndex": {"type": "integer"},
                "podIndex": {"type": "integer"}}},
            "managedBy": {"type": "string", "maxLength": 63},
            "ttlSecondsAfterFinished": {**_INT32, "minimum": 0},
            "volumeClaimPolicies": {"type": "array", "maxItems": 50}}}}}
#: kubeflow/training-operator pkg/apis/kubeflow.org/v1/tensorflow_types.go (TFJobSpec:
#: ``tfReplicaSpecs`` has no omitempty, so it is required) and common_types.go (RunPolicy,
#: ReplicaSpec, RestartPolicy, CleanPodPolicy, SchedulingPolicy).
TFJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"}, "kind": {"const": "TFJob"},
        "metadata": _OBJECT_META,
        "spec": {"type": "object", "required": ["tfReplicaSpecs"],
                 "additionalProperties": False, "properties": {
            "runPolicy": {"type": "object", "additionalProperties": False, "properties": {
                "cleanPodPolicy": {"enum": ["", "All", "Running", "None"]},
                "ttlSecondsAfterFinished": _INT32,
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "backoffLimit": _INT32,
                "schedulingPolicy": {"type": "object", "additionalProperties": False,
                                     "properties": {
                                         "minAvailable": _INT32, "queue": {"type": "string"},
                                         "minResources": {"type": "object"},
                                         "priorityClass": {"type": "string"},
                                         "scheduleTimeoutSeconds": _INT32}},
                "suspend": {"type": "boolean"}, "managedBy": {"type": "string"}}},
            "successPolicy": {"enum": ["", "AllWorkers"]},
            "tfReplicaSpecs": {
                "type": "object", "minProperties": 1,
                "propertyNames": {"enum": ["PS", "Worker", "Chief", "Master", "Evaluator"]},
                "additionalProperties": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "replicas": _INT32, "template": _TEMPLATE,
                        "restartPolicy": {"enum": ["Always", "OnFailure", "Never",
                                                   "ExitCode"]}}}},
            "enableDynamicWorker": {"type": "boolean"}}}}}

OPTIONS = CompileOptions(
    image_registry="europe-docker.pkg.dev/p/tbpipe", gpu_count=2, gpu_type="nvidia-l4",
    node_selectors=(("pool", "training"),),
    resources={"train": Resources("4", "8", "16Gi", "24Gi")},
    log_volume="tbpipe-logs")
OWNER = {"apiVersion": "v1", "kind": "Pod", "name": "step-pod", "uid": "u-1",
         "controller": False, "blockOwnerDeletion": False}
ENV = [{"name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "s3", "key": "id"}}},
       {"name": "TBPIPE_LOG_LEVEL", "value": "info"}]


def placement(engine: str = "jobset", options: CompileOptions = OPTIONS) -> WorkerPlacement:
    return WorkerPlacement.from_json(
        worker_placement(dataclasses_replace(options, distributed_engine=engine), "train"))


def dataclasses_replace(options: CompileOptions, **changes: object) -> CompileOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)


@pytest.fixture(scope="module", params=["jobset", "tfjob"])
def manifest(request) -> dict:
    return worker_set_manifest(placement(request.param), COMMAND, ENV, 4, run_id="run-7",
                               step="train", owners=[OWNER], service_account="pipeline-runner",
                               env_from=[{"secretRef": {"name": "smtp"}}])


def pod_specs(manifest: dict) -> list[tuple[dict, dict]]:
    """``(template metadata, pod spec)`` of each worker pod template."""
    if manifest["kind"] == "JobSet":
        return [(job["template"]["spec"]["template"]["metadata"],
                 job["template"]["spec"]["template"]["spec"])
                for job in manifest["spec"]["replicatedJobs"]]
    return [(r["template"]["metadata"], r["template"]["spec"])
            for r in manifest["spec"]["tfReplicaSpecs"].values()]


def test_matches_the_crd_fields(manifest):
    schema = JOBSET_SCHEMA if manifest["kind"] == "JobSet" else TFJOB_SCHEMA
    jsonschema.validate(manifest, schema)


@pytest.mark.parametrize("engine", ["jobset", "tfjob"])
def test_the_schemas_refuse_what_the_apis_would(engine):
    good = worker_set_manifest(placement(engine), COMMAND, ENV, 2, run_id="r", step="train")
    schema = JOBSET_SCHEMA if engine == "jobset" else TFJOB_SCHEMA
    jsonschema.validate(good, schema)
    if engine == "jobset":
        changes = [("failurePolicy", {"maxRestart": 3}), ("successPolicy", {"operator": "Every"}),
                   ("network", {"enableDnsHostnames": True}), ("replicatedJob", [])]
    else:
        changes = [("tfReplicaSpecs", {"worker": {"replicas": 2}}),
                   ("runPolicy", {"cleanPodPolicy": "Never"}),
                   ("tfReplicaSpecs", {"Worker": {"restartPolicy": "Sometimes"}})]
    for key, value in changes:
        broken = copy.deepcopy(good)
        broken["spec"][key] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)
    broken = copy.deepcopy(good)
    broken["metadata"]["name"] = "9-starts-with-a-digit"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_pods_and_jobs_are_valid_kubernetes(manifest):
    for metadata, spec in pod_specs(manifest):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "worker", **copy.deepcopy(metadata)}, "spec": spec}
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    if manifest["kind"] == "JobSet":
        for job in manifest["spec"]["replicatedJobs"]:
            kubernetes_validate.validate({"apiVersion": "batch/v1", "kind": "Job",
                                          "metadata": {"name": "w", **job["template"]["metadata"]},
                                          "spec": job["template"]["spec"]},
                                         KUBERNETES_VERSION, strict=True)
    (_, spec), = pod_specs(manifest)
    spec = copy.deepcopy(spec)
    spec["containers"][0]["resourcez"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod",
                                      "metadata": {"name": "w"}, "spec": spec},
                                     KUBERNETES_VERSION, strict=True)


def test_every_worker_has_the_steps_gpu_placement_image_env_and_command(manifest):
    (_, spec), = pod_specs(manifest)
    (container,) = spec["containers"]
    assert container["image"] == OPTIONS.image_for("train") == \
        "europe-docker.pkg.dev/p/tbpipe/tbpipe:0.1.0-gpu"
    assert container["command"] == COMMAND
    resources = container["resources"]
    assert resources["limits"] == {"cpu": "8", "memory": "24Gi", "nvidia.com/gpu": "2"}
    assert resources["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4",
                                    "pool": "training"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                    "effect": "NoSchedule"}]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["serviceAccountName"] == "pipeline-runner"
    (mount,) = container["volumeMounts"]
    (volume,) = spec["volumes"]
    assert mount["mountPath"] == "/mnt/tbpipe-logs" and mount["name"] == volume["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == "tbpipe-logs"
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3"
    assert env["TBPIPE_LOG_LEVEL"]["value"] == "info"
    assert manifest["metadata"]["ownerReferences"] == [OWNER]


def test_a_cpu_pipeline_asks_for_no_gpu():
    (_, spec), = pod_specs(worker_set_manifest(
        placement(options=dataclasses_replace(OPTIONS, gpu=False)), COMMAND, [], 2,
        run_id="r", step="train"))
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert "tolerations" not in spec
    assert spec["nodeSelector"] == {"pool": "training"}
    assert spec["containers"][0]["image"] == OPTIONS.image_for("preprocess")  # the CPU image


def test_jobset_workers_find_each_other_through_the_headless_service():
    spec = placement("jobset")
    manifest = jobset_manifest("tbpipe-train-0123456789", spec, COMMAND, ENV, 4,
                               run_id="r", step="train")
    job = manifest["spec"]["replicatedJobs"][0]
    assert job["replicas"] == 1
    assert job["template"]["spec"] | {"template": None} == {
        "parallelism": 4, "completions": 4, "completionMode": "Indexed", "backoffLimit": 0,
        "template": None}
    assert manifest["spec"]["network"]["enableDNSHostnames"] is True
    subdomain = manifest["spec"]["network"]["subdomain"]
    assert manifest["spec"]["failurePolicy"]["maxRestarts"] == spec.max_restarts > 0
    (container,) = job["template"]["spec"]["template"]["spec"]["containers"]
    hosts = next(e["value"] for e in container["env"] if e["name"] == HOSTS_ENV).split(",")
    assert hosts == worker_hosts("tbpipe-train-0123456789", 4)
    for index, host in enumerate(hosts):
        name, port = host.rsplit(":", 1)
        pod_host, domain = name.split(".")
        # {jobset}-{replicatedJob}-{jobIndex}-{podIndex}.{subdomain}
        assert pod_host == f"{manifest['metadata']['name']}-{job['name']}-0-{index}"
        assert domain == subdomain and re.match(DNS_LABEL, pod_host) and len(pod_host) <= 63
        assert int(port) == WORKER_PORT == container["ports"][0]["containerPort"]


@pytest.mark.parametrize(("step", "workers"), [("train", 2), ("finetune", 4096),
                                              ("A Long_step name, trial 12345678", 9999)])
def test_jobset_passes_the_jobset_webhooks_create_checks(step, workers):
    """jobset api/jobset/v1alpha2/jobset_webhook.go ``ValidateCreate``, rule by rule."""
    manifest = worker_set_manifest(placement("jobset"), COMMAND, [], workers, run_id="r" * 36,
                                   step=step)
    name, spec = manifest["metadata"]["name"], manifest["spec"]
    subdomain = spec["network"]["subdomain"]  # a DNS-1123 subdomain and a DNS-1035 label
    assert re.match(DNS_LABEL, subdomain) and len(subdomain) <= 63
    for rjob in spec["replicatedJobs"]:
        job = rjob["template"]["spec"]
        assert job["parallelism"] * rjob["replicas"] <= 2**31 - 1
        longest_job = f"{name}-{rjob['name']}-{rjob['replicas'] - 1}"
        assert re.match(DNS_LABEL, longest_job) and len(longest_job) <= 63
        assert job["completionMode"] == "Indexed"
        longest_pod = f"{longest_job}-{job['completions'] - 1}-abcde"
        assert re.match(DNS_LABEL, longest_pod) and len(longest_pod) <= 63, longest_pod
    names = {rjob["name"] for rjob in spec["replicatedJobs"]}
    assert set(spec["successPolicy"]["targetReplicatedJobs"]) <= names


def test_tfjob_workers_use_the_operators_container_port_and_restart_policy():
    manifest = tfjob_manifest("tbpipe-train-0123456789", placement("tfjob"), COMMAND, ENV, 3,
                              run_id="r", step="train")
    assert list(manifest["spec"]["tfReplicaSpecs"]) == ["Worker"]  # worker 0 is the chief
    worker = manifest["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3 and worker["restartPolicy"] == "ExitCode"
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # the operator's TFJobDefaultContainerName
    assert container["ports"][0]["name"] == "tfjob-port"  # ... and TFJobDefaultPortName
    assert HOSTS_ENV not in {e["name"] for e in container["env"]}  # TF_CONFIG: the operator's


def test_set_names_are_stable_per_run_and_step_and_valid():
    assert worker_set_name("run-1", "train") == worker_set_name("run-1", "train")
    names = {worker_set_name(run, step) for run in ("run-1", "run-2")
             for step in ("train", "finetune", "train-trial-01")}
    assert len(names) == 6
    long = worker_set_name("0" * 36, "A Very_Long step name, with trial 12345")
    for name in (*names, long):
        assert re.match(DNS_LABEL, name)
        assert len(f"{name}-worker-0-1023") <= 63


def test_placement_json_round_trips_and_refuses_what_tbpipe_did_not_compile():
    spec = placement("tfjob")
    assert WorkerPlacement.from_json(spec.to_json()) == spec
    for text, says in (("{", "not JSON"), ("[]", "JSON object"),
                       ('{"image": "x", "gpus": 1}', "unknown key 'gpus'"),
                       ('{"image": "x", "engine": "mpi"}', "--distributed-engine"),
                       ('{"image": "x", "deadline_s": 0}', "deadline_s"),
                       ('{"engine": "jobset"}', "missing")):
        with pytest.raises(InputError, match=says):
            WorkerPlacement.from_json(text)
    with pytest.raises(InputError, match="--distributed-engine"):
        CompileOptions(distributed_engine="mpijob")


def test_the_pipeline_gives_train_and_finetune_their_worker_placement(tmp_path):
    from tbpipe.pipelines.training import compile_pipeline

    options = dataclasses_replace(OPTIONS, distributed_engine="tfjob")
    path = compile_pipeline(str(tmp_path / "p.yaml"), options)
    spec, platform = list(yaml.safe_load_all(open(path)))
    found = {}

    def walk(dag: dict) -> None:
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            if "dag" in component:
                walk(component["dag"])
            value = task.get("inputs", {}).get("parameters", {}).get("worker_placement")
            if value:
                found.setdefault(task["taskInfo"]["name"], []).append(
                    (value["runtimeValue"]["constant"], task["componentRef"]["name"]))
    walk(spec["root"]["dag"])
    assert set(found) == {"train", "finetune"}
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step, uses in found.items():
        for text, ref in uses:
            assert text == worker_placement(options, step)
            workers = WorkerPlacement.from_json(text)
            assert workers.engine == "tfjob" and workers.gpu_count == 2
            # the same GPU placement as the step's own pod
            executor = spec["components"][ref]["executorLabel"]
            labels = executors[executor]["nodeSelector"]["labels"]
            assert labels == {workers.gpu_node_selector_key: workers.gpu_type,
                              **dict(workers.node_selectors)}
            container = spec["deploymentSpec"]["executors"][executor]["container"]
            assert container["image"] == workers.image
            assert int(container["resources"]["accelerator"]["resourceCount"]) == 2


def test_workers_manifest_shows_a_4_worker_jobset_with_2_gpus_each(capsys):
    """``tbpipe workers-manifest --workers 4 --gpu-count 2``, as kubectl -o yaml prints it."""
    from tbpipe.pipelines.cli.main import main

    assert main(["workers-manifest", "--workers", "4", "--gpu-count", "2",
                 "--namespace", "team"]) == 0
    out = capsys.readouterr().out
    (obj,) = list(yaml.safe_load_all(out))
    jsonschema.validate(obj, JOBSET_SCHEMA)
    assert out.startswith("apiVersion: jobset.x-k8s.io/v1alpha2\nkind: JobSet\n")
    assert obj["metadata"]["namespace"] == "team"
    job = obj["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == 4
    (container,) = job["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert json.dumps(obj).count("ownerReferences") == 0  # only a running step owns a set


def test_workers_manifest_tfjob_and_its_errors(capsys):
    from tbpipe.pipelines.cli.main import main

    assert main(["workers-manifest", "--workers", "3", "--distributed-engine", "tfjob",
                 "--no-gpu", "--step", "finetune"]) == 0
    obj = yaml.safe_load(capsys.readouterr().out)
    jsonschema.validate(obj, TFJOB_SCHEMA)
    assert obj["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 3
    assert main(["workers-manifest", "--workers", "1"]) == 1
    assert "--workers 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["workers-manifest", "--workers", "2", "--distributed-engine", "mpi"])
    assert exit_.value.code == 2
