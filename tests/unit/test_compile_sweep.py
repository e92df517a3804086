"""``tbpipe compile --sweep``: a ParallelFor of train trials, then select-trial."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tbpipe.pipelines.sweep import parse_sweep
from tbpipe.pipelines.training import compile_pipeline
from tests.helpers import TBPIPE

REPO = Path(__file__).resolve().parents[2]


def load(path) -> dict:
    return list(yaml.load_all(Path(path).read_text(), Loader=yaml.CSafeLoader))[0]


def by_name(dag: dict) -> dict:
    return {task["taskInfo"]["name"]: (key, task) for key, task in dag["tasks"].items()}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sweep") / "pipeline.yaml"
    proc = subprocess.run([*TBPIPE, "compile", "--package", str(out), "--sweep",
                           "learning_rate=0.003,0.001", "--sweep", "batch_size=32,128",
                           "--max-parallel", "2"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return load(out)


def test_the_trials_are_a_parallel_for_with_its_parallelism(swept):
    top = by_name(swept["root"]["dag"])
    assert "train" not in top  # the one train step became the loop
    key, loop = top["sweep"]
    assert loop["iteratorPolicy"]["parallelismLimit"] == 2
    items = json.loads(loop["parameterIterator"]["items"]["raw"])
    assert [(i["trial"], i["learning_rate"], i["batch_size"]) for i in items] == [
        ("trial-01", 0.003, 32), ("trial-02", 0.003, 128), ("trial-03", 0.001, 32),
        ("trial-04", 0.001, 128)]
    body = by_name(swept["components"][loop["componentRef"]["name"]]["dag"])
    assert set(body) == {"train"}
    params = body["train"][1]["inputs"]["parameters"]
    item = loop["parameterIterator"]["itemInput"]
    for name in ("trial", "learning_rate", "batch_size"):  # the trial's own values
        assert params[name] == {"componentInputParameter": item,
                                "parameterExpressionSelector":
                                    f'parseJson(string_value)["{name}"]'}, name
    for name in ("epochs", "seed", "precision", "log_root"):  # the run's parameters
        assert params[name]["componentInputParameter"] == f"pipelinechannel--{name}", name


def test_select_trial_collects_the_trials_and_feeds_evaluate_and_select(swept):
    top = by_name(swept["root"]["dag"])
    loop_key = top["sweep"][0]
    select_key, select = top["select-trial"]
    assert select["dependentTasks"] == [loop_key]
    assert select["inputs"]["artifacts"]["models"]["taskOutputArtifact"] == {
        "outputArtifactKey": "pipelinechannel--train-model", "producerTask": loop_key}
    trials = json.loads(select["inputs"]["parameters"]["trials"]["runtimeValue"]["constant"])
    assert [t["trial"] for t in trials] == ["trial-01", "trial-02", "trial-03", "trial-04"]
    evaluate = top["evaluate"][1]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert evaluate == {"outputArtifactKey": "best_model", "producerTask": select_key}
    # the trial table reaches select-model's summary in each of the three branches
    sweeps = [task["inputs"]["parameters"].get("sweep")
              for component in swept["components"].values() if "dag" in component
              for task in component["dag"]["tasks"].values()
              if task["taskInfo"]["name"] == "select-model"]
    assert sweeps == [{"componentInputParameter": "pipelinechannel--select-trial-Output"}] * 3
    (branch_name,) = [n for n in top if n.startswith("condition-branches")]
    branches = top[branch_name][1]["inputs"]["parameters"]
    assert branches["pipelinechannel--select-trial-Output"] == {"taskOutputParameter": {
        "outputParameterKey": "Output", "producerTask": select_key}}


def test_without_a_sweep_the_dag_has_one_train_step_and_no_loop(tmp_path):
    spec = load(compile_pipeline(str(tmp_path / "plain.yaml")))
    top = by_name(spec["root"]["dag"])
    assert "train" in top and "sweep" not in top and "select-trial" not in top
    assert "parameterIterator" not in json.dumps(spec)


def test_the_sweep_is_compiled_in_not_a_parameter(tmp_path):
    plain = load(compile_pipeline(str(tmp_path / "plain.yaml")))
    swept = load(compile_pipeline(str(tmp_path / "swept.yaml"),
                                  sweep=parse_sweep(["seed=1,2,3"], samples=2)))
    assert plain["root"]["inputDefinitions"] == swept["root"]["inputDefinitions"]
    loop = by_name(swept["root"]["dag"])["sweep"][1]
    assert len(json.loads(loop["parameterIterator"]["items"]["raw"])) == 2
    assert "iteratorPolicy" not in loop  # no --max-parallel: no limit


@pytest.mark.parametrize(("flags", "needle"), [
    (["--sweep", "epoch=1,2"], "--sweep='epoch': is not a train parameter"),
    (["--sweep", "learning_rate="], "--sweep learning_rate='': has no values"),
    (["--max-parallel", "2"], "--max-parallel=2: needs --sweep"),
])
def test_compile_refuses_a_bad_sweep_in_one_line(tmp_path, flags, needle):
    out = tmp_path / "p.yaml"
    proc = subprocess.run([*TBPIPE, "compile", "--package", str(out), *flags], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("tbpipe: error: ") and needle in line, line
    assert not out.exists()
