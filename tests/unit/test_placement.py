"""Where each step runs, read back from the compiled YAML.

Assumes the layout of kfp 2.17.3 / kfp-kubernetes 2.17.3 (pinned in pyproject.toml; the first
test fails when the installed versions drift from the pins): container image and resources in
``deploymentSpec.executors``, retry and caching on the DAG tasks, node selectors and
tolerations in the second YAML document, ``platforms.kubernetes.deploymentSpec.executors``.
"""

import re
from pathlib import Path

import pytest
import yaml

from tbpipe.components._image import image
from tbpipe.pipelines.cli.main import main
from tbpipe.pipelines.placement import (
    DATA_VOLUME_MOUNT,
    DEFAULT_RESOURCES,
    LOG_VOLUME_MOUNT,
    VOLUME_LOG_ROOT,
    CompileOptions,
    step_kind,
)

REPO = Path(__file__).resolve().parents[2]
REGISTRY = "registry.example/proj"
GPU_TASKS = {"train", "finetune"}


def compile_spec(tmp_path, *flags):
    """Compile with ``tbpipe compile`` flags; returns {display name: [task view, ...]}."""
    out = tmp_path / f"pipeline-{abs(hash(flags))}.yaml"
    assert main(["compile", "--package", str(out), *flags]) == 0
    docs = list(yaml.load_all(out.read_text(), Loader=yaml.CSafeLoader))
    spec, platform = docs[0], (docs[1] if len(docs) > 1 else {})
    k8s = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
    views = {}
    for task in walk(spec, spec["root"]["dag"]):
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        views.setdefault(task["taskInfo"]["name"], []).append({
            "task": task, "container": spec["deploymentSpec"]["executors"][label]["container"],
            "k8s": k8s.get("executors", {}).get(label, {})})
    return views


def walk(spec, dag):
    """Every container task of ``dag`` and of the sub-DAGs (condition branches) inside it."""
    for task in dag["tasks"].values():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            yield from walk(spec, component["dag"])
        else:
            yield task


@pytest.fixture(scope="module")
def default_spec(tmp_path_factory):
    return compile_spec(tmp_path_factory.mktemp("default"), "--registry", REGISTRY)


@pytest.fixture(scope="module")
def cpu_spec(tmp_path_factory):
    return compile_spec(tmp_path_factory.mktemp("cpu"), "--registry", REGISTRY, "--no-gpu")


def test_installed_kfp_matches_the_pins_this_layout_assumes():
    import kfp
    import kfp.kubernetes

    pins = (REPO / "docker" / "constraints.txt").read_text().splitlines()
    pinned = dict(re.match(r"^([\w-]+)==([\w.]+)$", p).groups() for p in pins if "==" in p)
    assert pinned["kfp"] == kfp.__version__ == "2.17.3"
    assert pinned["kfp-kubernetes"] == kfp.kubernetes.__version__ == "2.17.3"


def test_every_step_is_placed(default_spec):
    assert set(default_spec) == {"preprocess", "preprocess-finetune-data", "check-data",
                                 "train", "evaluate", "decide-finetune", "finetune",
                                 "evaluate-finetuned", "select-model", "promote"}
    assert len(default_spec["finetune"]) == 2 and len(default_spec["select-model"]) == 3


def test_gpu_only_on_train_and_finetune(default_spec):
    for name, views in default_spec.items():
        for view in views:
            accelerator = view["container"].get("resources", {}).get("accelerator")
            if name in GPU_TASKS:
                assert accelerator["resourceType"] == "nvidia.com/gpu"
                assert accelerator["resourceCount"] == "1"
                assert view["k8s"]["nodeSelector"]["labels"] == {
                    "cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}
                assert view["k8s"]["tolerations"] == [
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
            else:
                assert accelerator is None, name
                assert "nodeSelector" not in view["k8s"] and "tolerations" not in view["k8s"], name


def test_images_follow_registry_and_gpu(default_spec, cpu_spec):
    for name, views in default_spec.items():
        expected = image("gpu" if name in GPU_TASKS else "cpu", REGISTRY)
        assert {v["container"]["image"] for v in views} == {expected}, name
    assert image("gpu", REGISTRY).startswith(REGISTRY + "/") and image("gpu", REGISTRY) != \
        image("cpu", REGISTRY)
    for name, views in cpu_spec.items():
        assert {v["container"]["image"] for v in views} == {image("cpu", REGISTRY)}, name


def test_no_gpu_asks_for_no_gpu_anywhere(cpu_spec):
    for name, views in cpu_spec.items():
        for view in views:
            assert "accelerator" not in view["container"].get("resources", {}), name
            assert "nodeSelector" not in view["k8s"] and "tolerations" not in view["k8s"], name


def test_default_resources_per_step(default_spec):
    for name, views in default_spec.items():
        want = DEFAULT_RESOURCES[step_kind(name)]
        for view in views:
            got = view["container"]["resources"]
            assert (got["resourceCpuRequest"], got["resourceCpuLimit"],
                    got["resourceMemoryRequest"], got["resourceMemoryLimit"]) == (
                want.cpu_request, want.cpu_limit, want.memory_request, want.memory_limit), name


def test_retries_only_on_training_steps(default_spec, tmp_path):
    for name, views in default_spec.items():
        for view in views:
            policy = view["task"].get("retryPolicy")
            if name in GPU_TASKS:
                assert policy["maxRetryCount"] == 2 and policy["backoffDuration"] == "60s"
                assert policy["backoffFactor"] == 2.0
            else:
                assert policy is None, name
    custom = compile_spec(tmp_path, "--retries", "5", "--retry-backoff", "30s")
    assert custom["train"][0]["task"]["retryPolicy"]["maxRetryCount"] == 5
    assert custom["finetune"][0]["task"]["retryPolicy"]["backoffDuration"] == "30s"
    assert "retryPolicy" not in compile_spec(tmp_path, "--retries", "0")["train"][0]["task"]


def test_caching_defaults_and_overrides(default_spec, tmp_path):
    def cached(views):
        return {v["task"].get("cachingOptions", {}).get("enableCache", False) for v in views}

    assert cached(default_spec["preprocess"]) == {True}
    assert cached(default_spec["train"]) == cached(default_spec["finetune"]) == {False}
    flipped = compile_spec(tmp_path, "--cache-training", "--no-cache-preprocess")
    assert cached(flipped["preprocess"]) == {False}
    assert cached(flipped["train"]) == cached(flipped["finetune"]) == {True}


def test_gpu_flags_and_extra_node_selectors(tmp_path):
    spec = compile_spec(tmp_path, "--gpu-type", "nvidia-l4", "--gpu-count", "2",
                        "--node-selector", "pool=training", "--node-selector", "spot=true",
                        "--cpu", "train=4,8", "--memory", "train=16Gi")
    for name in GPU_TASKS:
        view = spec[name][0]
        assert view["container"]["resources"]["accelerator"]["resourceCount"] == "2"
        assert view["k8s"]["nodeSelector"]["labels"] == {
            "cloud.google.com/gke-accelerator": "nvidia-l4", "pool": "training", "spot": "true"}
    train = spec["train"][0]["container"]["resources"]
    assert (train["resourceCpuRequest"], train["resourceCpuLimit"]) == ("4", "8")
    assert (train["resourceMemoryRequest"], train["resourceMemoryLimit"]) == ("16Gi", "16Gi")
    assert spec["finetune"][0]["container"]["resources"]["resourceCpuRequest"] == \
        DEFAULT_RESOURCES["finetune"].cpu_request
    assert "nodeSelector" not in spec["evaluate"][0]["k8s"]


def test_gpu_node_selector_key_can_change_or_go(tmp_path):
    spec = compile_spec(tmp_path, "--gpu-node-selector-key", "nvidia.com/gpu.present",
                        "--gpu-node-selector-value", "true")
    assert spec["train"][0]["k8s"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
    bare = compile_spec(tmp_path, "--gpu-node-selector-key", "")
    assert "nodeSelector" not in bare["train"][0]["k8s"]
    assert bare["train"][0]["k8s"]["tolerations"][0]["key"] == "nvidia.com/gpu"


@pytest.mark.parametrize("flags, code, needle", [
    (["--node-selector", "pool"], 2, "expected KEY=VALUE"),
    (["--node-selector", "=x"], 2, "expected KEY=VALUE"),
    (["--cpu", "gpu=2"], 2, "unknown step 'gpu'"),
    (["--cpu", "train=lots"], 1, "not a Kubernetes cpu quantity"),
    (["--memory", "evaluate=8Gi,4Gi"], 1, "request 8Gi exceeds limit 4Gi"),
    (["--gpu-count", "0"], 1, "--gpu-count must be >= 1"),
    (["--retry-backoff", "1m"], 1, "--retry-backoff must be seconds"),
    (["--log-volume", "Logs_Claim"], 1, "not a PersistentVolumeClaim name"),
    (["--log-volume", "tb", "--data-volume", "tb"], 1, "is the --log-volume claim already"),
])
def test_bad_flags_are_one_line(tmp_path, capsys, flags, code, needle):
    try:
        rc = main(["compile", "--package", str(tmp_path / "x.yaml"), *flags])
    except SystemExit as exc:
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == code and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "x.yaml").exists()


def test_options_reject_unknown_resource_kind():
    from tbpipe.components.common.errors import InputError
    from tbpipe.pipelines.placement import Resources

    with pytest.raises(InputError, match="unknown step kind 'gpu'"):
        CompileOptions(resources={"gpu": Resources("1", "1", "1Gi", "1Gi")})
    with pytest.raises(ValueError, match="no placement for step 'extra'"):
        step_kind("extra")


def test_volumes_are_mounted_in_every_step_and_log_root_is_on_one(tmp_path, default_spec):
    flags = ("--log-volume", "tb-logs", "--data-volume", "tb-data")
    views = compile_spec(tmp_path, *flags)
    assert set(views) == set(default_spec)
    for name, task_views in views.items():
        for view in task_views:
            mounts = {(m["pvcNameParameter"]["runtimeValue"]["constant"], m["mountPath"])
                      for m in view["k8s"].get("pvcMount", [])}
            assert mounts == {("tb-logs", LOG_VOLUME_MOUNT), ("tb-data", DATA_VOLUME_MOUNT)}, name
    spec = next(yaml.safe_load_all((tmp_path / f"pipeline-{abs(hash(flags))}.yaml").read_text()))
    log_root = spec["root"]["inputDefinitions"]["parameters"]["log_root"]
    assert log_root["defaultValue"] == VOLUME_LOG_ROOT
    assert VOLUME_LOG_ROOT.startswith(LOG_VOLUME_MOUNT + "/")


def test_no_volume_flags_mount_nothing_and_leave_log_root_empty(default_spec, tmp_path):
    assert not any(view["k8s"].get("pvcMount") for views in default_spec.values()
                   for view in views)
    out = tmp_path / "plain.yaml"
    assert main(["compile", "--package", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    assert not spec["root"]["inputDefinitions"]["parameters"]["log_root"].get("defaultValue")
