"""launch_workers against KubeStandIn, a stand-in Kubernetes API server (a test double).

The real ``kubernetes`` client talks HTTP to the stand-in on loopback through a kubeconfig;
the stand-in plays the JobSet controller / Training Operator only as each test scripts it
(one function per look at the set). No TensorFlow, no cluster.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tbpipe.components.common.errors import TbpipeError
from tbpipe.components.training.launcher import launch_workers
from tbpipe.components.training.launcher.manifests import worker_set_manifest, worker_set_name
from tbpipe.components.training.launcher.placement import WorkerPlacement
from tests.kube_standin import KubeStandIn

COMMAND = ["python", "-m", "tbpipe.components.training.worker", "gs://b/run/task.json"]
POLL_S = 0.02
PLURALS = {"jobset": "jobsets", "tfjob": "tfjobs"}
SUCCEEDED = {"jobset": "Completed", "tfjob": "Succeeded"}


def placement(engine: str = "jobset", **changes: object) -> WorkerPlacement:
    values = dict(image="registry.example/tbpipe:0.1.0-gpu", engine=engine, gpu_count=2,
                  gpu_type="nvidia-l4", gpu_node_selector_key="cloud.google.com/gke-accelerator",
                  cpu_request="4", cpu_limit="8", memory_request="16Gi", memory_limit="24Gi",
                  deadline_s=60, pending_timeout_s=0)
    return WorkerPlacement(**{**values, **changes})


@pytest.fixture
def kube(tmp_path, monkeypatch):
    with KubeStandIn() as kube:
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # never a real cluster
        monkeypatch.setenv("KFP_NAMESPACE", kube.namespace)
        monkeypatch.setenv("KFP_POD_NAME", "step-a")
        kube.add_step_pod("step-a", env=[
            {"name": "AWS_SECRET_ACCESS_KEY",
             "valueFrom": {"secretKeyRef": {"name": "s3-credentials", "key": "secret"}}}])
        yield kube
    assert kube.problems == []


def launch(kube: KubeStandIn, workers: int = 3, engine: str = "jobset", step: str = "train",
           **changes: object) -> list[str]:
    lines: list[str] = []
    env = {"AWS_SECRET_ACCESS_KEY": "do-not-copy-me", "TBPIPE_LOG_ROOT": "gs://b/logs"}
    try:
        launch_workers(COMMAND, env, workers, placement(engine, **changes).to_json(), step,
                       lines.append, poll_s=POLL_S)
    finally:
        launch.lines = lines
    return lines


def name_of(step: str = "train", run: str = "run-1") -> str:
    return worker_set_name(run, step)


def chief_runs_then_completes(engine: str, log: list[str]):
    """Look 1: pods pending; 2: running, the chief logging; 3: all done."""
    def pending(kube, name):
        kube.start_pods(name, phase="Pending")

    def running(kube, name):
        pods = kube.worker_pods(name)
        for pod in pods:
            kube.set_phase(pod, "Running")
        kube.logs[pods[0]] = list(log)

    def done(kube, name):
        for pod in kube.worker_pods(name):
            kube.set_phase(pod, "Succeeded", exit_code=0)
        kube.finish(name, SUCCEEDED[engine])
    return [lambda kube, name: None, pending, running, done]


@pytest.mark.parametrize("engine", ["jobset", "tfjob"])
def test_creates_the_set_watches_it_to_success_and_streams_the_chiefs_log(kube, engine):
    log = ["epoch 1/2 loss 0.91 accuracy 0.71", "epoch 2/2 loss 0.42 accuracy 0.88"]
    kube.script = chief_runs_then_completes(engine, log)
    lines = launch(kube, engine=engine)
    name = name_of()
    assert kube.created == [(PLURALS[engine], name)]
    assert lines[0].startswith(f"started 3 workers: {'JobSet' if engine == 'jobset' else 'TFJob'}"
                               f" {name} in namespace team")
    assert lines[1] == "workers: 0/3 scheduled, 0 running"  # created, no pods yet
    assert "workers: 3/3 scheduled, 0 running" in lines
    assert "workers: 3/3 scheduled, 3 running" in lines
    assert [line for line in lines if line.startswith("worker 0: ")] == \
        [f"worker 0: {line}" for line in log]
    assert lines[-1].endswith("all 3 workers completed")
    _, obj = kube.the_set(name)
    assert obj["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "step-a",
        "uid": kube.pods["step-a"]["metadata"]["uid"], "controller": False,
        "blockOwnerDeletion": False}]
    for pod in kube.worker_pods(name):
        spec = kube.pods[pod]["spec"]
        (container,) = spec["containers"]
        assert container["command"] == COMMAND
        assert container["image"] == "registry.example/tbpipe:0.1.0-gpu"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
        assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
        assert spec["serviceAccountName"] == "pipeline-runner"  # the step's own
        env = {e["name"]: e for e in container["env"]}
        assert env["TBPIPE_LOG_ROOT"] == {"name": "TBPIPE_LOG_ROOT", "value": "gs://b/logs"}
        # the secret travels as the step's reference to it, never as its value
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == \
            "s3-credentials"
        assert "do-not-copy-me" not in str(obj)
        assert ("TBPIPE_WORKER_HOSTS" in env) == (engine == "jobset")


def test_the_chiefs_lines_reach_the_step_log_while_it_runs(kube):
    """The set completes only once its chief's first lines were shown: a live stream."""
    seen: list[str] = []

    def running(kube, name):
        pods = kube.start_pods(name)
        kube.logs[pods[0]] = ["epoch 1/9 loss 0.91"]

    def done_once_streamed(kube, name):
        if "worker 0: epoch 1/9 loss 0.91" not in seen:
            kube.script.append(done_once_streamed)  # look again
            return
        kube.logs[kube.worker_pods(name)[0]].append("epoch 2/9 loss 0.55")
        for pod in kube.worker_pods(name):
            kube.set_phase(pod, "Succeeded", exit_code=0)
        kube.finish(name, "Completed")
    kube.script = [running, done_once_streamed]
    launch_workers(COMMAND, {}, 3, placement(deadline_s=10).to_json(), "train", seen.append,
                   poll_s=POLL_S)
    (done,) = [i for i, line in enumerate(seen) if line.endswith(", 3 done")]
    assert seen.index("worker 0: epoch 1/9 loss 0.91") < done
    assert "worker 0: epoch 2/9 loss 0.55" in seen and seen[-1].endswith("completed")


def test_a_failing_worker_ends_in_one_line_naming_it_and_its_last_log_lines(kube):
    def fail(kube, name):
        pods = kube.start_pods(name)
        kube.logs[pods[0]] = ["epoch 1/5 loss 0.9"]
        kube.logs[pods[2]] = [f"line {i}" for i in range(20)] + [
            "Traceback (most recent call last):", "ValueError: shapes (32, 10) and (32, 7)"]
        kube.set_phase(pods[2], "Failed", exit_code=1)
        kube.set_phase(pods[0], "Failed", exit_code=1)  # later: the collective broke
        kube.pods[pods[0]]["status"]["containerStatuses"][0]["state"]["terminated"][
            "finishedAt"] = "2099-01-01T00:00:00Z"
        kube.finish(name, "Failed", "jobset failed due to reaching max number of restarts")
    kube.script = [lambda kube, name: None, fail]
    with pytest.raises(TbpipeError) as caught:
        launch(kube)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"worker 2 (pod {name_of()}-worker-0-2-")
    assert "failed with exit code 1 (Error)" in message
    assert "last log lines: line 17 | line 18 | line 19 | Traceback (most recent call last): | " \
           "ValueError: shapes (32, 10) and (32, 7)" in message
    assert message.endswith("reaching max number of restarts")
    assert "worker 0: epoch 1/5 loss 0.9" in launch.lines  # the chief's log came first


@pytest.mark.parametrize(("stuck", "says"), [
    (dict(phase="Pending", unschedulable="0/3 nodes are available: 3 Insufficient "
                                         "nvidia.com/gpu."),
     "worker 1 (pod {pod}) cannot be scheduled: 0/3 nodes are available: 3 Insufficient "
     "nvidia.com/gpu.; each worker needs 2 GPU(s) of type nvidia-l4"),
    (dict(phase="Pending", waiting=("ImagePullBackOff", 'Back-off pulling image "x"')),
     "worker 1 (pod {pod}) cannot start: ImagePullBackOff (Back-off pulling image \"x\"); "
     "check --registry"),
])
def test_a_worker_that_cannot_start_ends_the_launch_and_deletes_the_set(kube, stuck, says):
    def start(kube, name):
        pods = kube.start_pods(name)
        kube.set_phase(pods[1], **stuck)
    kube.script = [start]
    with pytest.raises(TbpipeError) as caught:
        launch(kube)
    message = str(caught.value)
    head, tail = says.split("{pod}")
    assert message.startswith(f"{head}{name_of()}-worker-0-1-"), message
    assert tail in message, message
    assert message.endswith(f"JobSet {name_of()} was deleted")
    assert kube.deleted == [("jobsets", name_of())]


def test_a_worker_pending_less_than_the_timeout_is_waited_for(kube):
    def unschedulable(kube, name):
        for pod in kube.start_pods(name):
            kube.set_phase(pod, "Pending", unschedulable="0/3 nodes are available")

    def scheduled(kube, name):
        for pod in kube.worker_pods(name):
            kube.set_phase(pod, "Running")
    done = chief_runs_then_completes("jobset", [])[-1]
    kube.script = [unschedulable, unschedulable, scheduled, done]
    lines = launch(kube, pending_timeout_s=30)
    assert lines[-1].endswith("completed") and kube.deleted == []


def test_a_cancelled_run_whose_set_is_deleted_ends_with_a_clear_line(kube):
    def running(kube, name):
        kube.start_pods(name)

    def cancelled(kube, name):
        kube.remove(name)  # garbage collection after the run's pods went
    kube.script = [running, running, cancelled]
    with pytest.raises(TbpipeError, match=f"JobSet {name_of()} was deleted while its workers "
                                          r"ran \(the run was cancelled"):
        launch(kube)


@pytest.mark.parametrize("engine", ["jobset", "tfjob"])
def test_a_retried_step_follows_the_set_of_its_earlier_attempt(kube, engine, monkeypatch):
    earlier = worker_set_manifest(placement(engine), COMMAND, [], 3, run_id="run-1",
                                  step="train", owners=[{"apiVersion": "v1", "kind": "Pod",
                                                         "name": "step-a", "uid": "uid-a"}])
    kube.put_set(PLURALS[engine], earlier)
    kube.add_step_pod("step-b")  # the retry: another pod of the same run
    monkeypatch.setenv("KFP_POD_NAME", "step-b")
    kube.script = chief_runs_then_completes(engine, ["epoch 3/3"])[1:]
    lines = launch(kube, engine=engine)
    assert kube.created == []  # no second set
    assert ("POST", f"/apis/{earlier['apiVersion']}/namespaces/team/{PLURALS[engine]}") \
        in kube.requests
    assert "no second set" in lines[0]
    _, obj = kube.the_set(name_of())
    assert [o["uid"] for o in obj["metadata"]["ownerReferences"]] == \
        ["uid-a", kube.pods["step-b"]["metadata"]["uid"]]
    assert lines[-1].endswith("all 3 workers completed")


def test_a_retried_step_replaces_a_failed_or_different_set_and_keeps_a_completed_one(kube):
    failed = worker_set_manifest(placement(), COMMAND, [], 3, run_id="run-1", step="train")
    failed["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    kube.put_set("jobsets", failed)
    kube.script = chief_runs_then_completes("jobset", [])
    lines = launch(kube)
    assert kube.deleted == [("jobsets", name_of())]
    assert kube.created == [("jobsets", name_of())]
    assert "of an earlier attempt failed: replacing it" in lines[0]

    other = worker_set_manifest(placement(), COMMAND, [], 5, run_id="run-1", step="finetune")
    kube.put_set("jobsets", other)  # 5 workers where this attempt wants 3
    kube.script = chief_runs_then_completes("jobset", [])
    lines = launch(kube, step="finetune")
    assert "runs something else: replacing it" in lines[0]
    assert kube.created[-1] == ("jobsets", name_of("finetune"))

    kube.script = []
    assert launch(kube, step="finetune") == [
        f"JobSet {name_of('finetune')} of an earlier attempt of this step already completed"]
    assert kube.created.count(("jobsets", name_of("finetune"))) == 1


def test_the_deadline_deletes_the_workers_and_says_so(kube):
    kube.script = [lambda kube, name: kube.start_pods(name)]
    with pytest.raises(TbpipeError, match=r"did not finish within the deadline \(1s\); they "
                                          "were deleted"):
        launch(kube, deadline_s=1)
    assert kube.deleted == [("jobsets", name_of())]


def test_cluster_refusals_are_one_line_with_what_to_do(kube):
    kube.installed = {"tfjobs"}
    with pytest.raises(TbpipeError, match=r"the JobSet API \(jobset.x-k8s.io/v1alpha2\) is not "
                                          "installed: install the JobSet controller"):
        launch(kube)
    kube.fail(403, "POST", "/apis/kubeflow.org/v1/namespaces/team/tfjobs")
    with pytest.raises(TbpipeError, match="refused to create tfjobs in namespace team: 403 .*"
                                          "role of deploy/rbac"):
        launch(kube, engine="tfjob")


def test_a_short_api_outage_while_watching_is_ridden_out(kube):
    kube.script = chief_runs_then_completes("jobset", [])
    kube.fail(503, "GET", f"/apis/jobset.x-k8s.io/v1alpha2/namespaces/team/jobsets/{name_of()}",
              times=3)
    assert launch(kube)[-1].endswith("all 3 workers completed")


def test_the_launch_thread_leaves_no_log_follower_behind(kube):
    kube.script = chief_runs_then_completes("jobset", ["epoch 1/1"])
    before = {t.name for t in threading.enumerate()}
    launch(kube)
    assert "tbpipe-chief-log" not in {t.name for t in threading.enumerate()} - before


def test_one_worker_is_not_a_set(kube):
    with pytest.raises(TbpipeError, match="workers=1"):
        launch(kube, workers=1)
    assert kube.created == []


# --- deploy/rbac: exactly the verbs the launcher uses ----------------------------------------

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac"


def used_permissions(requests: list[tuple[str, str]]) -> set[tuple[str, str, str]]:
    """``(apiGroup, resource, verb)`` of each request the stand-in saw."""
    verbs = {"POST": "create", "PATCH": "patch", "DELETE": "delete"}
    used = set()
    for method, path in requests:
        parts = path.strip("/").split("/")
        if parts[0] == "api":  # /api/v1/namespaces/NS/pods[/NAME[/log]]
            resource = "pods/log" if parts[-1] == "log" else "pods"
            verb = "list" if len(parts) == 5 else "get"
            used.add(("", resource, verb))
        else:  # /apis/GROUP/VERSION/namespaces/NS/PLURAL[/NAME]
            verb = verbs.get(method) or ("get" if len(parts) == 7 else "list")
            used.add((parts[1], parts[5], verb))
    return used


def test_the_rbac_role_grants_exactly_what_the_launcher_uses(kube, monkeypatch):
    import os
    import shutil
    import subprocess

    import kubernetes_validate
    import yaml

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # no server: offline
    out = subprocess.run(["kubectl", "kustomize", str(RBAC)], capture_output=True, text=True,
                         check=True, timeout=60, env=env).stdout
    built = {obj["kind"]: obj for obj in yaml.safe_load_all(out) if obj}
    assert set(built) == {"Role", "RoleBinding"}
    for obj in built.values():
        kubernetes_validate.validate(obj, "1.30.0", strict=True)
    binding = built["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": built["Role"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner",
                                    "namespace": "kubeflow"}]
    granted = {(group, resource, verb) for rule in built["Role"]["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}

    # every call the launcher makes: create + watch + the chief's log, a failing worker's
    # log, a retried step (patch), a failed earlier set replaced (delete), on both engines
    for engine in ("jobset", "tfjob"):
        kube.requests.clear()
        failed = worker_set_manifest(placement(engine), COMMAND, [], 3, run_id="run-1",
                                     step=f"failed-{engine}")
        failed["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
        kube.put_set(PLURALS[engine], failed)
        kube.script = chief_runs_then_completes(engine, ["epoch 1/1"])
        launch(kube, engine=engine, step=f"failed-{engine}", deadline_s=5)
        kube.put_set(PLURALS[engine], worker_set_manifest(
            placement(engine), COMMAND, [], 3, run_id="run-1", step=f"retried-{engine}"))

        def fail(kube, name):
            pods = kube.start_pods(name)
            kube.set_phase(pods[1], "Failed", exit_code=1)
            kube.finish(name, "Failed")
        kube.script = [lambda kube, name: None, fail]  # the first look: it is running
        with pytest.raises(TbpipeError, match="worker 1"):
            launch(kube, engine=engine, step=f"retried-{engine}", deadline_s=5)
        used = used_permissions(kube.requests)
        mine = {g for g in granted if g[1] in ("pods", "pods/log", PLURALS[engine])}
        assert used == mine, (engine, used ^ mine)


def test_a_set_another_running_step_owns_is_never_replaced(kube, monkeypatch):
    """Two steps of one run given the same step name (a sweep's trials): the second refuses."""
    sibling = kube.add_step_pod("trial-1-pod")
    other = worker_set_manifest(placement(), ["python", "-m", "x", "gs://b/trial-1.json"], [], 3,
                                run_id="run-1", step="train",
                                owners=[{"apiVersion": "v1", "kind": "Pod", "name": "trial-1-pod",
                                         "uid": sibling["metadata"]["uid"]}])
    kube.put_set("jobsets", other)
    with pytest.raises(TbpipeError, match="runs other work for pod trial-1-pod of this run, "
                                          "which is still running: give each multi-worker step"):
        launch(kube)
    assert kube.deleted == [] and kube.created == []
    sibling["status"]["phase"] = "Failed"  # that step is gone: a retry may replace its set
    kube.script = chief_runs_then_completes("jobset", [])
    assert "runs something else: replacing it" in launch(kube)[0]


def test_the_rbac_binds_in_a_profile_namespace_as_docs_cluster_md_shows(tmp_path):
    import os
    import shutil
    import subprocess

    import yaml

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    docs = (RBAC.parents[1] / "docs" / "cluster.md").read_text()
    (example,) = [block for block in docs.split("```yaml\n")[1:]
                  if "default-editor" in block]
    kustomization = yaml.safe_load(example.split("```")[0])
    kustomization["resources"] = [os.path.relpath(RBAC, tmp_path)]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    out = subprocess.run(["kubectl", "kustomize", str(tmp_path)], capture_output=True,
                         text=True, check=True, timeout=60, env=env).stdout
    built = {obj["kind"]: obj for obj in yaml.safe_load_all(out) if obj}
    assert {obj["metadata"]["namespace"] for obj in built.values()} == {"kubeflow-user-jane"}
    assert built["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "default-editor", "namespace": "kubeflow-user-jane"}]


def test_sigterm_stops_the_workers_too(kube):
    """KFP cancels a run by stopping its pods (SIGTERM), which may stay as they are."""
    import os
    import signal

    def running(kube, name):
        kube.start_pods(name)

    def cancelled(kube, name):
        os.kill(os.getpid(), signal.SIGTERM)  # to this process: the step's
    kube.script = [running, cancelled]
    earlier = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TbpipeError, match=f"JobSet {name_of()}: the step was stopped "
                                          r"\(SIGTERM: the run was cancelled"):
        launch(kube)
    assert kube.deleted == [("jobsets", name_of())]
    assert signal.getsignal(signal.SIGTERM) is earlier  # tbpipe's handler is gone again


def test_the_workers_get_the_steps_environment_its_secrets_as_references(kube):
    """What ``--secret`` and ``set_env_variable`` gave the step reaches every worker.

    The train step passes the workers no variables of its own (worker.py); the store's
    credentials and endpoint come from the step's pod spec: Secret keys as references
    (``use_secret_as_env``), whole Secrets as ``envFrom``, plain values as they are.
    """
    secret_ref = {"secretKeyRef": {"name": "tbpipe-creds", "key": "AWS_ACCESS_KEY_ID",
                                   "optional": True}}
    kube.add_step_pod("step-a", env=[
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": secret_ref},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio.team:9000"},
        {"name": "TF_CONFIG", "value": "{}"},  # each worker gets its own
        {"name": "KFP_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        env_from=[{"secretRef": {"name": "smtp"}}])
    kube.script = chief_runs_then_completes("tfjob", ["done"])
    launch_workers(COMMAND, {}, 2, placement("tfjob").to_json(), "train", [].append,
                   poll_s=POLL_S)
    _, obj = kube.the_set(name_of())
    (container,) = obj["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "AWS_ACCESS_KEY_ID", "valueFrom": secret_ref}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio.team:9000"
    assert env["KFP_POD_NAME"]["valueFrom"]["fieldRef"] == {"fieldPath": "metadata.name"}
    assert "TF_CONFIG" not in env
    assert container["envFrom"] == [{"secretRef": {"name": "smtp"}}]
