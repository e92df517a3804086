"""Issue 14's "done when": two runs in a row with --promote-to, through kfp.local.

The first run promotes (no baseline yet); a second, worse run (1 epoch, learning rate 1e-6)
keeps the baseline, and the production folder still serves the first model (``v1``) byte for
byte;
``tbpipe runs`` lists both with their outcome.
"""

import hashlib
import json
import os
import re
import subprocess

import pytest

from tests.helpers import TBPIPE, read_scalars

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def tbpipe(*argv, timeout=900):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*TBPIPE, *argv], capture_output=True, text=True, timeout=timeout,
                          env=env)


def folder_digest(folder):
    """Every file under ``folder`` -> its sha256."""
    return {os.path.relpath(os.path.join(d, f), folder):
            hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(folder) for f in files}


def test_first_run_promotes_a_worse_second_run_keeps_the_baseline(tmp_path):
    prod, logs = str(tmp_path / "prod"), str(tmp_path / "logs")
    common = ("--finetune", "never", "--log-root", logs, "--experiment", "promo",
              "--pipeline-root", str(tmp_path / "kfp"), "--promote-to", prod)
    first = tbpipe("run", *common, "--run-name", "good", "--epochs", "3")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    line = re.search(r"^promoted: new accuracy (\d\.\d{4}) vs baseline none \(no baseline.*"
                     rf"\) -> {re.escape(prod)}$", first.stdout, re.M)
    assert line, first.stdout[-2000:]
    good_accuracy = float(line.group(1))
    served = os.path.join(prod, "v1")
    assert os.path.isfile(os.path.join(served, "model.keras"))
    assert os.path.isdir(os.path.join(served, "saved_model"))  # the servable export came along
    before = folder_digest(prod)

    second = tbpipe("run", *common, "--run-name", "worse", "--epochs", "1",
                    "--learning-rate", "1e-6")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    kept = re.search(r"^kept baseline: new accuracy (\d\.\d{4}) vs baseline (\d\.\d{4}) ",
                     second.stdout, re.M)
    assert kept, second.stdout[-2000:]
    assert float(kept.group(1)) < float(kept.group(2)) == good_accuracy
    assert folder_digest(prod) == before  # production untouched, byte for byte
    # no staging folder left beside production
    assert sorted(os.listdir(tmp_path)) == [".prod.lock", "kfp", "logs", "logs-checkpoints",
                                            "prod"]  # and the promotions' lock file
    assert sorted(os.listdir(prod)) == ["promotion.json", "serving", "v1"]
    assert os.readlink(os.path.join(prod, "serving")) == "v1/saved_model"  # what KServe serves

    record = json.load(open(os.path.join(prod, "promotion.json")))
    assert [h["run"] for h in record["history"]] == ["promo/good"]
    assert record["current"]["version"] == "v1"
    scalars = read_scalars(os.path.join(logs, "promo", "worse", "promote"))
    assert scalars["promote/accuracy/baseline"][0][1] == pytest.approx(good_accuracy, abs=1e-4)
    assert scalars["promote/promoted"] == [(0, 0.0)]
    report = re.findall(r"promote report: (\S+/promote/report)", second.stdout)
    assert report and "**kept baseline" in open(report[0]).read()

    listed = tbpipe("runs", "--log-root", logs, "--output", "json", timeout=120)
    assert listed.returncode == 0, listed.stderr[-2000:]
    runs = {r["run"]: r for r in json.loads(listed.stdout)["runs"]}
    assert set(runs) == {"good", "worse"}
    assert runs["good"]["promotion"]["promoted"] and not runs["worse"]["promotion"]["promoted"]
    assert runs["good"]["test_accuracy"] == pytest.approx(good_accuracy, abs=1e-4)
    assert "promote" in runs["worse"]["steps"] and runs["worse"]["finetuned"] is False
