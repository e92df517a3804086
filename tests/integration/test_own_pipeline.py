"""docs/examples/own_pipeline.py: tbpipe's steps inside a user's pipeline, compiled and run."""

import importlib.util
from pathlib import Path

import pytest
import yaml

from tests.helpers import read_tags

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "own_pipeline.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("own_pipeline", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_compiles_with_the_gpu_placement_on_the_users_train_task(example, tmp_path):
    from kfp import compiler

    out = tmp_path / "own.yaml"
    compiler.Compiler().compile(example.own_pipeline, str(out))
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"preprocess", "train", "evaluate", "gate"}
    train_exec = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train_exec["resources"]["accelerator"]["resourceCount"] == "1"
    assert train_exec["resources"]["resourceCpuLimit"] == "4"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "from tbpipe.components" in out.read_text()


def test_it_runs_through_kfp_local(example, tmp_path):
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    task = example.own_pipeline(log_root=str(tmp_path / "logs"), epochs=1, threshold=0.0)
    assert task.output == "ship"
    runs = list((tmp_path / "logs" / "default").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("my-training-")  # the KFP job's name
    assert {"preprocess", "train", "evaluate"} <= {p.name for p in runs[0].iterdir()}
    assert "epoch/val_accuracy" in read_tags(str(runs[0] / "train"))["scalars"]
    assert "eval/accuracy" in read_tags(str(runs[0] / "evaluate"))["scalars"]
