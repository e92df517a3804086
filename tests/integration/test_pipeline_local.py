"""The whole pipeline through kfp.local (subprocess runner), read back from its event files."""

import json
import os
import re
import subprocess

import pytest

from tests.helpers import TBPIPE, free_port, read_tags

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = ("preprocess", "check-data", "train", "evaluate", "finetune", "evaluate-finetuned")


def tbpipe(*argv, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*TBPIPE, *argv], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    proc = tbpipe("run", "--finetune", "always", "--epochs", "4", "--finetune-epochs", "1",
                  "--log-root", str(root / "logs"), "--pipeline-root", str(root / "kfp"),
                  "--experiment", "itest", "--run-name", "r1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root, proc.stdout


def test_run_prints_accuracies_model_and_logs(finished_run):
    root, out = finished_run
    found = re.findall(r"test accuracy ([01]\.\d{4}) \((\w+) model\)", out)
    accuracies = {name: float(value) for value, name in found}
    assert set(accuracies) == {"trained", "finetuned"}, out[-2000:]
    assert all(a > 0.5 for a in accuracies.values()), accuracies
    final = re.search(r"final model: (trained|finetuned) -> (\S+)", out)
    assert final and os.path.isfile(os.path.join(final.group(2), "model.keras"))
    assert f"TensorBoard logs: {root / 'logs' / 'itest' / 'r1'}" in out
    assert f"tbpipe tensorboard --log-root {root / 'logs'}" in out


def test_every_step_logged_what_it_must(finished_run):
    root, _ = finished_run
    run_dir = root / "logs" / "itest" / "r1"
    # the steps (and the run claim), no checkpoints: they sit beside the log root
    assert set(os.listdir(run_dir)) - {"_run.json", "_summary.json"} == set(STEPS)
    assert (root / "logs-checkpoints" / "itest" / "r1" / "checkpoints" / "train").is_dir()
    tags = {step: read_tags(str(run_dir / step)) for step in STEPS}
    pre = tags["preprocess"]
    assert "data/class_counts/text_summary" in pre["tensors"]
    assert not any(t.startswith("data/class_count") for t in pre["scalars"])
    assert "data/pixels" in pre["histograms"] and "data/samples" in pre["images"]
    checked = tags["check-data"]  # digits are 8x8: exact copies only, no champion
    assert {"data/violations", "data/exact_duplicates"} <= set(checked["scalars"])
    assert "data/labels/train" in checked["histograms"]
    for step in ("train", "finetune"):
        scalars = set(tags[step]["scalars"])
        for tag in ("batch/loss", "batch/accuracy", "epoch/loss", "epoch/accuracy",
                    "epoch/val_loss", "epoch/val_accuracy", "epoch/learning_rate"):
            assert tag in scalars, (step, tag, sorted(scalars))
        assert any(t.startswith("weights/") for t in tags[step]["histograms"]), step
        assert any("hparam" in t for t in scalars), (step, sorted(scalars))
    for step in ("evaluate", "evaluate-finetuned"):
        assert {"eval/accuracy", "eval/loss"} <= set(tags[step]["scalars"])
        assert "eval/confusion_matrix" in tags[step]["images"]
        assert any(t.startswith("pr/") for t in tags[step]["tensors"]), tags[step]["tensors"]


def test_kfp_outputs_are_written(finished_run):
    _, out = finished_run
    job_dir = re.search(r"artifacts and metrics: (\S+)", out).group(1)
    reports = re.findall(r"evaluation report \((?:trained|fine-tuned) model\): (\S+)", out)
    assert len(reports) == 2 and all(r.startswith(job_dir) for r in reports), out[-2000:]
    text = open(reports[0]).read()
    assert "itest%2Fr1" in text and "accuracy" in text.lower()
    outputs = json.load(open(os.path.join(os.path.dirname(reports[0]), "executor_output.json")))
    metrics = outputs["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert 0 < metrics["accuracy"] <= 1 and metrics["num_examples"] > 300
    matrix = outputs["artifacts"]["classification_metrics"]["artifacts"][0]["metadata"]
    assert len(matrix["confusionMatrix"]["rows"]) == 10


def test_missing_data_is_one_clear_line(tmp_path):
    proc = tbpipe("run", "--data", str(tmp_path / "nope.csv"), "--log-root", str(tmp_path / "l"),
                  "--pipeline-root", str(tmp_path / "k"), timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("tbpipe")]
    assert len(lines) == 1 and "nope.csv" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_table_without_label_fails_in_the_step_with_one_line(tmp_path):
    table = tmp_path / "digits.csv"
    table.write_text("a,b,c,d\n" + "\n".join("1,2,3,4" for _ in range(20)) + "\n")
    proc = tbpipe("run", "--data", str(table), "--log-root", str(tmp_path / "l"),
                  "--pipeline-root", str(tmp_path / "k"), timeout=300)
    assert proc.returncode != 0
    assert "label" in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tbpipe: error:")
    assert "Traceback" not in proc.stdout + proc.stderr


def test_same_seed_same_split_and_metrics(tmp_path):
    outputs = []
    for attempt in ("a", "b"):
        proc = tbpipe("run", "--epochs", "2", "--finetune", "never", "--seed", "7",
                      "--log-root", str(tmp_path / attempt / "logs"),
                      "--pipeline-root", str(tmp_path / attempt / "kfp"), "--run-name", "same")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        outputs.append(proc.stdout)
    accuracies = [re.findall(r"test accuracy ([01]\.\d{4}) \(trained model\)", o) for o in outputs]
    assert accuracies[0] and accuracies[0] == accuracies[1]
    shards = [sorted((tmp_path / a / "kfp").glob("*/preprocess/*/shard-*.bin")) for a in "ab"]
    assert shards[0] and [p.read_bytes() for p in shards[0]] == [p.read_bytes() for p in shards[1]]


def get_json(url, timeout=60):
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=10) as reply:
            data = json.load(reply)
        if data or time.monotonic() > deadline:
            return data
        time.sleep(1)


def test_tbpipe_tensorboard_lists_every_step_with_its_tags(finished_run):
    root, _ = finished_run
    port = free_port()
    proc = subprocess.Popen([*TBPIPE, "tensorboard", "--log-root",
                             str(root / "logs"), "--port", str(port), "--reload-interval", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("loader:" in line for line in lines) and len(lines) < 200:
            lines.append(proc.stdout.readline())
        assert any(f"TensorBoard http://127.0.0.1:{port}/" in line for line in lines), lines
        assert any("loader: fast" in line for line in lines), lines  # a local root: fast loader
        base = f"http://127.0.0.1:{port}/data/plugin"
        scalars = get_json(f"{base}/scalars/tags")
        runs = {f"itest/r1/{step}" for step in STEPS}
        assert runs <= set(scalars), sorted(scalars)
        assert {"batch/loss", "epoch/val_accuracy"} <= set(scalars["itest/r1/finetune"])
        assert "eval/accuracy" in scalars["itest/r1/evaluate-finetuned"]
        assert "data/samples" in get_json(f"{base}/images/tags")["itest/r1/preprocess"]
        histograms = get_json(f"{base}/histograms/tags")
        assert any(t.startswith("weights/") for t in histograms["itest/r1/train"])
        assert get_json(f"{base}/pr_curves/tags").get("itest/r1/evaluate")
    finally:
        proc.terminate()
        proc.wait(30)
