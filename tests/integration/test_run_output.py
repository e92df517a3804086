"""What a person and a script get from a real ``tbpipe run`` (subprocess, not a terminal).

Two whole-pipeline runs (1 epoch each) serve every check: the quiet text display with
fine-tuning (seven steps) and ``--output json`` without it; a failing run stops in preprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.helpers import TBPIPE

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STEPS = ("preprocess", "train", "evaluate", "decide-finetune", "finetune",
         "evaluate-finetuned", "select-model")


def tbpipe(root, *argv: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the default
    return subprocess.run([*TBPIPE, "run", "--epochs", "1", "--log-root", str(root / "logs"),
                           "--pipeline-root", str(root / "kfp"), "--experiment", "ux", *argv],
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    proc = tbpipe(root, "--finetune", "always", "--finetune-epochs", "1", "--run-name", "q1")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root, proc


def test_quiet_run_shows_each_step_and_the_result_in_under_40_lines(quiet_run):
    root, proc = quiet_run
    lines = proc.stdout.splitlines()
    assert len(lines) < 40, proc.stdout
    for step in STEPS:
        done = [line for line in lines if re.match(rf"✓ {re.escape(step)} +\d+\.\d+s", line)]
        assert len(done) == 1, (step, proc.stdout)
    figures = {line.split()[1]: line for line in lines if line.startswith("✓")}
    assert re.search(r"kept \d+ examples", figures["preprocess"])
    assert re.search(r"val_accuracy [01]\.\d{4}$", figures["train"])
    assert re.search(r"test accuracy [01]\.\d{4}", figures["evaluate-finetuned"])
    assert "fine-tune on the same data" in figures["decide-finetune"]
    assert re.search(r"(trained|finetuned) model \(test accuracy", figures["select-model"])
    assert any(re.match(r"  train +epoch 1/1 ", line) for line in lines)  # not a terminal
    for needle in ("test accuracy", "final model:", "TensorBoard logs:", "view: ",
                   "evaluation report (trained model):", "evaluation report (fine-tuned model):"):
        assert needle in proc.stdout, needle
    for noise in ("executor_input", "KFP Executor", '"inputs"', "E0000", "cuInit",
                  "RuntimeWarning", "Traceback"):
        assert noise not in proc.stdout + proc.stderr, noise
    steps_shown = [line for line in lines if not line.startswith("evaluation report")]
    assert not any(re.search(r"evaluate-\d|select-model-\d", line) for line in steps_shown)
    log_path = re.match(r"tbpipe run ux/q1 \(full log: (\S+)\)$", lines[0])[1]
    assert log_path.startswith(str(root))
    log = open(log_path, encoding="utf-8").read()
    assert "Executing task" in log and "executor_input" in log  # it all went somewhere


def test_output_json_is_one_object_with_the_result(tmp_path):
    proc = tbpipe(tmp_path, "--finetune", "never", "--run-name", "j1", "--output", "json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(proc.stdout)  # all of stdout: one object, nothing else
    assert 0 < result["test_accuracy"] <= 1
    assert result["accuracy"] == {"trained": result["test_accuracy"]}
    assert result["final_model"] == "trained"
    assert os.path.isfile(os.path.join(result["model_uri"], "model.keras"))
    assert result["log_dir"] == str(tmp_path / "logs" / "ux" / "j1")
    assert os.path.isdir(os.path.join(result["log_dir"], "train"))
    assert result["tensorboard_url"] == "http://127.0.0.1:6006/#scalars&regexInput=ux%2Fj1"
    assert os.path.isfile(result["run_log"]) and set(result["reports"]) == {"check-data", "trained"}
    assert set(result["html_reports"]) == {"check-data", "trained"}
    with open(result["html_reports"]["trained"]) as html:
        assert "<h2>Misclassified test images</h2>" in html.read()
    assert result["run_id"] is None and result["artifacts"].endswith(result["kfp_job"])
    assert re.search(r"^✓ train ", proc.stderr, re.M)  # the display went to stderr


def test_a_failing_step_shows_its_last_lines_and_the_log_path(tmp_path):
    table = tmp_path / "digits.csv"
    table.write_text("a,b,c,d\n" + "\n".join("1,2,3,4" for _ in range(20)) + "\n")
    proc = tbpipe(tmp_path, "--data", str(table), "--run-name", "f1", timeout=300)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    failed = next(k for k, line in enumerate(lines) if line.startswith("✗ preprocess"))
    tail = lines[failed + 1:]
    assert any("tbpipe: preprocess: error:" in line and "label" in line for line in tail)
    log_path = re.search(r"^  full log: (\S+)$", proc.stdout, re.M)[1]
    assert "no 'label' column" in open(log_path, encoding="utf-8").read()
    assert proc.stderr.strip().splitlines()[-1].startswith("tbpipe: error: step preprocess")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(lines) < 30
