"""A 2x2 ``--sweep`` through kfp.local: every trial in TensorBoard's HParams, the best goes on.

One run (1 epoch, builtin:digits, no fine-tuning); the HParams plugin of a real TensorBoard
is asked over HTTP for the experiment and its session groups, as the dashboard asks.
"""

import glob
import json
import os
import re
import subprocess
import time
import urllib.request

import pytest

from tbpipe.pipelines.runners.tensorboard import start_tensorboard
from tests.helpers import TBPIPE, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRID = {(lr, bs) for lr in (0.003, 0.001) for bs in (64, 128)}
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


@pytest.fixture(scope="module")
def swept_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([*TBPIPE, "run", "--sweep", "learning_rate=0.003,0.001", "--sweep",
                           "batch_size=64,128", "--epochs", "1", "--finetune", "never",
                           "--log-root", str(root / "logs"), "--pipeline-root",
                           str(root / "kfp"), "--experiment", "sweep", "--run-name", "s1"],
                          capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root, proc.stdout


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def served_hparams(log_root: str, tmp_path) -> tuple[dict, list[dict]]:
    """The HParams plugin's experiment and session groups, once all four trials are served."""
    with open(tmp_path / "tb.log", "w") as log, start_tensorboard(
            log_root, port=free_port(), reload_interval=1, output=log) as board:
        base = f"{board.url.rstrip('/')}/data/plugin/hparams"
        deadline = time.monotonic() + 120
        while True:
            experiment = post(f"{base}/experiment", {"experimentName": ""})
            groups = post(f"{base}/session_groups", {
                "experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [],
                "startIndex": 0, "sliceSize": 100}).get("sessionGroups", [])
            trials = [g for g in groups if "/trial-" in g["name"]]
            if len(trials) == 4 or time.monotonic() > deadline:
                return experiment, trials
            time.sleep(1)


def test_every_trial_is_in_the_hparams_table_and_the_best_went_on(swept_run, tmp_path):
    root, out = swept_run
    experiment, trials = served_hparams(str(root / "logs"), tmp_path)
    assert {"learning_rate", "batch_size", "trial"} <= {h["name"] for h in
                                                        experiment["hparamInfos"]}
    assert {"hparam/val_accuracy", "hparam/val_loss"} <= {m["name"]["tag"] for m in
                                                           experiment["metricInfos"]}
    assert sorted(g["name"] for g in trials) == [f"sweep/s1/trial-0{i}/train" for i in range(1, 5)]
    served = {}
    for group in trials:
        hparams = group["hparams"]
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        assert 0.0 < metrics["hparam/val_accuracy"] <= 1.0 and metrics["hparam/val_loss"] > 0
        served[hparams["trial"]] = (hparams["learning_rate"], int(hparams["batch_size"]),
                                    metrics["hparam/val_accuracy"])
        assert group["name"] == f"sweep/s1/{hparams['trial']}/train"
    assert {(lr, bs) for lr, bs, _ in served.values()} == GRID

    # the trial table tbpipe run printed is the one TensorBoard serves
    printed = re.findall(r"^\s+(trial-0\d)( \*)?\s+(\d+)\s+([\d.]+)\s+([01]\.\d{4})\s", out, re.M)
    assert len(printed) == 4, out[-3000:]
    for trial, _, batch, rate, accuracy in printed:
        assert served[trial][:2] == (float(rate), int(batch))
        assert float(accuracy) == pytest.approx(served[trial][2], abs=1e-4)
    best = max(sorted(served), key=lambda t: served[t][2])  # ties: the earlier trial
    assert [t for t, mark, *_ in printed if mark] == [best]

    # the best trial's model is the one evaluated and selected
    final = re.search(r"final model: trained -> (\S+)", out).group(1)
    final_meta = json.load(open(os.path.join(final, "model.json")))
    assert final_meta["trial"] == best
    (trained,) = [path for path in glob.glob(str(root / "kfp" / "*" / "*" / "train" / "model"))
                  if json.load(open(os.path.join(path, "model.json")))["trial"] == best]
    with open(os.path.join(trained, "model.keras"), "rb") as a, \
            open(os.path.join(final, "model.keras"), "rb") as b:
        assert a.read() == b.read()
    assert re.search(r"test accuracy ([01]\.\d{4}) \(trained model\)", out)
    assert os.listdir(root / "logs" / "sweep" / "s1" / "evaluate")


def test_every_trial_continued_the_run(swept_run):
    """One claim hand-over (from tbpipe run to the KFP job); each trial is that job's step."""
    root, _ = swept_run
    log = (root / "kfp" / "run-logs" / "sweep" / "s1.log").read_text()  # the steps' own lines
    assert len(re.findall(r"resuming run sweep/s1 \(claimed by tbpipe-run-", log)) == 1, log
    assert len(re.findall(r"resuming run", log)) == 1
    run_dir = root / "logs" / "sweep" / "s1"
    assert sorted(p.name for p in run_dir.glob("trial-*")) == [f"trial-0{i}" for i in range(1, 5)]
    for trial in run_dir.glob("trial-*"):
        assert [p.name for p in trial.iterdir()] == ["train"]
        assert list((trial / "train").glob("events.out.tfevents.*"))
    checkpoints = root / "logs-checkpoints" / "sweep" / "s1" / "checkpoints"  # beside the logs
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        f"trial-0{i}" for i in range(1, 5)]
