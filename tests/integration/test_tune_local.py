"""``tbpipe run --tune`` through kfp.local: rounds, a failed trial, pruning, the budget, the
goal stop.

Tiny runs (the builtin digits, 1-3 epochs, 1-5 trials, no fine-tuning). A user model whose
``width`` keyword is tuned fails to build at ``width=64``: that trial is recorded failed
and the search goes on; with no failures allowed the run stops with one line. In the main
run a trial with a tiny learning rate, suggested after three good ones, is pruned by the
median pruner at epoch 2 of 3. The study is read back from the log root (a local folder;
S3 on moto's server for the goal stop), and a real TensorBoard's HParams plugin, asked over
HTTP, lists every trial with its state and its place on the Pareto front.
"""

import json
import os
import re
import subprocess
import time

import pytest

from tbpipe.components.tuning.objectives import DEFAULT_OBJECTIVES, PARETO_METRIC, pareto_front
from tbpipe.components.tuning.study import read_trials
from tbpipe.pipelines.runners.tensorboard import start_tensorboard
from tests.helpers import TBPIPE, free_port
from tests.integration.test_sweep_local import ALL_STATUSES, post

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NET = '''
import keras


def net(input_shape, num_classes, *, width=8):
    if width > 32:
        raise ValueError(f"width {width} is too wide for this test")
    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(width, activation="relu"),
                             keras.layers.Dense(num_classes, activation="softmax")])
'''


def tbpipe_run(root, run: str, *flags: str, log_root: str = "",
               epochs: int = 1) -> subprocess.CompletedProcess:
    (root / "net.py").write_text(NET)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*TBPIPE, "run", "--model", "net.py:net", "--epochs", str(epochs),
                           "--finetune", "never", "--precision", "float32", "--log-root",
                           log_root or str(root / "logs"), "--pipeline-root", str(root / "kfp"),
                           "--experiment", "tune", "--run-name", run, *flags],
                          cwd=root, capture_output=True, text=True, timeout=1500, env=env)


#: The main run's grid and seed: its seeded order (Optuna's GridSampler, one trial a round)
#: is width 8, 4 (lr 0.02), 64 (fails), 16 (lr 0.02), then width 4 at lr 1e-6, whose curve
#: stays near chance: three complete trials before it, so the median pruner (3 startup
#: trials, from epoch 2 of 3) stops it after epoch 2.
TUNED = ("--tune", "model.width=64|4|8|16", "--tune", "learning_rate=0.02|1e-6",
         "--algorithm", "grid", "--trials", "5", "--max-failed-trials", "2",
         "--pruner", "median", "--seed", "47")
TINY_LR = 1e-6


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    proc = tbpipe_run(root, "t1", *TUNED, epochs=3)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return root, proc.stdout


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tuned_run):
    root, out = tuned_run
    records = read_trials(str(root / "logs" / "tune" / "t1" / "study"))
    assert len(records) == 5
    failed = [r for r in records if r.state == "failed"]
    assert failed and all(r.params["model.width"] == 64 and "width 64 is too wide" in r.error
                          for r in failed)
    assert failed[0].number < records[-1].number  # a trial was suggested after a failure
    complete = [r for r in records if r.state == "complete"]
    assert complete and all(r.params["model.width"] in (4, 8, 16) for r in complete)
    assert re.search(rf"^tune: {len(records)} trials \(.*{len(failed)} failed.*\), "
                     r"best trial-0\d", out, re.M), out[-3000:]
    for record in failed:
        name = f"trial-{record.number + 1:02d}"
        assert re.search(rf"^\s+{name}\s+failed\s.*width 64 is too wide", out, re.M)
    final = re.search(r"final model: trained -> (\S+)", out).group(1)
    meta = json.loads(open(os.path.join(final, "model.json")).read())
    winner = max(complete, key=lambda r: (r.values["val_accuracy"], -r.number))
    assert meta["trial"] == f"trial-{winner.number + 1:02d}"
    summary = json.loads((root / "logs" / "tune" / "t1" / "_summary.json").read_text())
    pruned = [r for r in records if r.state == "pruned"]
    assert summary["trials"] == {"complete": len(complete), "failed": len(failed),
                                 "pruned": len(pruned)}


def test_a_clearly_worse_trial_is_pruned_and_shown_pruned(tuned_run):
    root, out = tuned_run
    records = read_trials(str(root / "logs" / "tune" / "t1" / "study"))
    tiny = [r for r in records if r.params["learning_rate"] == TINY_LR
            and r.params["model.width"] <= 32]
    before = [r for r in records if r.state == "complete" and r.number < tiny[0].number]
    assert len(before) >= 3, "the grid's seeded order changed: see TUNED"
    assert [r.state for r in tiny] == ["pruned"]
    (pruned,) = tiny
    assert pruned.epochs_run == 2 and sorted(pruned.intermediate) == [1, 2]
    assert pruned.intermediate[2] < min(r.intermediate[2] for r in before)
    assert os.path.exists(os.path.join(pruned.model_uri, "model.json"))  # its model kept
    name = f"trial-{pruned.number + 1:02d}"
    assert re.search(r"^tune: 5 trials \(.*1 pruned.*\)", out, re.M), out[-3000:]
    assert re.search(rf"^\s+{name}\s+pruned\s+2\s", out, re.M), out[-3000:]
    assert re.search(rf"train {name} .*\(pruned after 2 of 3 epochs\)", out), out[-3000:]
    listed = subprocess.run([*TBPIPE, "runs", "--log-root", str(root / "logs")],
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    (line,) = [x for x in listed.stdout.splitlines() if x.split()[:2] == ["tune", "t1"]]
    assert "5 (1 failed, 1 pruned)" in line, listed.stdout


def test_every_trial_is_in_the_hparams_table_with_its_state(tuned_run, tmp_path):
    root, _ = tuned_run
    records = read_trials(str(root / "logs" / "tune" / "t1" / "study"))
    want = {f"tune/t1/trial-{r.number + 1:02d}/train": r.state for r in records}
    assert "pruned" in want.values() and "failed" in want.values()
    front = {r.number for r in pareto_front(records, DEFAULT_OBJECTIVES)}
    want_front = {f"tune/t1/trial-{r.number + 1:02d}/train": float(r.number in front)
                  for r in records}
    with open(tmp_path / "tb.log", "w") as log, start_tensorboard(
            str(root / "logs"), port=free_port(), reload_interval=1, output=log) as board:
        base = f"{board.url.rstrip('/')}/data/plugin/hparams"
        deadline = time.monotonic() + 120
        while True:
            groups = post(f"{base}/session_groups", {
                "experimentName": "", "allowedStatuses": ALL_STATUSES, "colParams": [],
                "startIndex": 0, "sliceSize": 100}).get("sessionGroups", [])
            served = {g["name"]: g["hparams"].get("tune_state") for g in groups
                      if "/trial-" in g["name"]}
            on_front = {g["name"]: metric_value(g, PARETO_METRIC) for g in groups
                        if "/trial-" in g["name"]}
            if (served, on_front) == (want, want_front) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert served == want
    assert on_front == want_front


def metric_value(group: dict, tag: str) -> float | None:
    """A session group's value of the HParams metric ``tag`` (None: not there)."""
    for metric in group.get("metricValues", []):
        if metric["name"]["tag"] == tag:
            return metric["value"]
    return None


def test_past_the_failure_budget_the_run_stops_in_one_line(tmp_path):
    proc = tbpipe_run(tmp_path, "t2", "--tune", "model.width=64|128", "--algorithm", "grid",
                      "--trials", "2")
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("tbpipe: error:")]
    assert line.startswith("tbpipe: error: step suggest failed: 1 failed trial(s), more than "
                           "--max-failed-trials 0 allows (trial-01: ")
    assert "fix the cause or allow more failures" in line


@pytest.mark.s3
def test_the_goal_met_stops_the_search_with_the_study_on_an_object_store(tmp_path, s3_root):
    """The rounds read the study back from the log root on S3 (moto's server): the goal,
    met by the first trial, leaves the later rounds nothing to train."""
    from tbpipe.components.common.storage import list_files

    proc = tbpipe_run(tmp_path, "t3", "--tune", "model.width=8|16|24", "--algorithm", "grid",
                      "--trials", "3", "--tune-goal", "val_accuracy>=0.1", log_root=s3_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_trials(f"{s3_root}/tune/t3/study")
    assert [r.state for r in records] == ["complete"]
    assert "stopped early: goal val_accuracy>=0.1 met" in proc.stdout
    assert re.search(r"train trial-01 .* val_accuracy [01]\.\d{4} \(complete after 1 of 1 "
                     r"epochs\)", proc.stdout), proc.stdout[-3000:]
    folders = {name.split("/")[0] for name in list_files(f"{s3_root}/tune/t3")}
    assert sorted(f for f in folders if f.startswith("trial-")) == ["trial-01"]
    assert not (tmp_path / "logs").exists()  # nothing went to a local folder instead
