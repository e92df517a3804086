"""Sweeps: the grid, seeded samples, every bad flag as one line; trial names; select-trial."""

from __future__ import annotations

import json

import pytest

from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.common.limits import MAX_SWEEP_TRIALS
from tbpipe.components.common.naming import (
    checkpoint_dir_for,
    job_of,
    step_log_dir,
    validate_trial,
)
from tbpipe.components.selection.core import choose_trial, trial_table
from tbpipe.pipelines.sweep import Sweep, parse_axis, parse_sweep


def test_the_grid_is_every_combination_in_the_order_given():
    sweep = parse_sweep(["learning_rate=0.003,0.001,0.0003", "batch_size=32,128"])
    trials = sweep.trials()
    assert [t["trial"] for t in trials] == [f"trial-{i:02d}" for i in range(1, 7)]
    assert [(t["learning_rate"], t["batch_size"]) for t in trials] == [
        (0.003, 32), (0.003, 128), (0.001, 32), (0.001, 128), (0.0003, 32), (0.0003, 128)]
    assert isinstance(trials[0]["batch_size"], int) and sweep.grid_size == 6


def test_samples_are_distinct_reproducible_picks_kept_in_grid_order():
    flags = ["learning_rate=0.1,0.01,0.001,0.0001", "batch_size=16,32,64", "seed=1,2"]
    grid = [{k: v for k, v in t.items() if k != "trial"} for t in parse_sweep(flags).trials()]
    picked = parse_sweep(flags, samples=5).trials()
    again = parse_sweep(flags, samples=5).trials()
    assert picked == again and len(picked) == 5
    combos = [{k: v for k, v in t.items() if k != "trial"} for t in picked]
    positions = [grid.index(c) for c in combos]  # each pick is a grid point, no repeats
    assert positions == sorted(set(positions))
    assert [t["trial"] for t in picked] == [f"trial-{i:02d}" for i in range(1, 6)]


def test_loop_items_carry_the_train_arguments():
    sweep = parse_sweep(["model=builtin:cnn", "precision=float32,auto"])
    items = sweep.loop_items()
    assert items[0] == {"trial": "trial-01", "model_spec": "builtin:cnn", "model_source": "",
                        "precision": "float32"}
    assert {tuple(item) for item in items} == {tuple(items[0])}  # one set of keys for KFP


def test_a_swept_python_model_carries_its_source(tmp_path):
    source = "def build(shape, classes):\n    raise NotImplementedError\n"
    (tmp_path / "mine.py").write_text(source)
    items = parse_sweep([f"model={tmp_path / 'mine.py'}:build,builtin:cnn"]).loop_items()
    assert [item["model_source"] for item in items] == [source, ""]


BAD = {
    "unknown key": (["epoch=1,2"], r"--sweep='epoch': is not a train parameter a sweep can "
                                   r"vary; use one of epochs, batch_size"),
    "not a train parameter": (["val_fraction=0.1"], r"--sweep='val_fraction': is not a train"),
    "empty list": (["learning_rate="], r"--sweep learning_rate='': has no values"),
    "blank list": (["batch_size= "], r"--sweep batch_size='': has no values"),
    "empty item": (["batch_size=32,,64"], r"--sweep batch_size='32,,64': has an empty value"),
    "no equals": (["learning_rate"], r"--sweep='learning_rate': expected KEY=V1,V2"),
    "not an integer": (["batch_size=32,big"], r"--sweep batch_size='big': must be an integer"),
    "not a number": (["learning_rate=fast"], r"--sweep learning_rate='fast': must be a number"),
    "rate below zero": (["learning_rate=0.01,-1"], r"--sweep learning_rate=-1.0: must be "
                                                   r"greater than 0"),
    "epochs zero": (["epochs=0,1"], r"--sweep epochs=0: must be a positive integer"),
    "unknown precision": (["precision=fp8"], r"--sweep precision='fp8': must be one of auto"),
    "bad model": (["model=builtin:cnn,builtin:rnn"], r"--sweep model='builtin:rnn': the only "
                                                     r"built-in model is builtin:cnn$"),
    "twice": (["seed=1,2", "seed=3"], r"--sweep seed='seed': is swept twice"),
    "repeated value": (["seed=1,2,1"], r"--sweep seed='1,2,1': repeats a value"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_sweep_is_one_line_naming_the_flag(case):
    import re

    flags, message = BAD[case]
    with pytest.raises(InputError) as caught:
        parse_sweep(flags)
    assert re.match(message, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_samples_and_parallelism_are_checked():
    with pytest.raises(SettingError, match=r"--sweep-samples=5: must be at most the grid's 4"):
        parse_sweep(["seed=1,2", "batch_size=8,16"], samples=5)
    with pytest.raises(SettingError, match=r"--sweep-samples=-1: must be a positive integer"):
        parse_sweep(["seed=1,2"], samples=-1)
    with pytest.raises(SettingError, match=r"--max-parallel=-2: must be 0"):
        parse_sweep(["seed=1,2"], max_parallel=-2)
    with pytest.raises(SettingError, match=r"--sweep-samples=3: needs --sweep"):
        parse_sweep([], samples=3)
    assert parse_sweep([]) is None


def test_a_grid_too_big_must_be_sampled():
    big = [f"seed={','.join(map(str, range(MAX_SWEEP_TRIALS + 1)))}"]
    with pytest.raises(SettingError, match=rf"more than {MAX_SWEEP_TRIALS}; pick some with "
                                           r"--sweep-samples N"):
        parse_sweep(big)
    assert len(parse_sweep(big, samples=MAX_SWEEP_TRIALS).trials()) == MAX_SWEEP_TRIALS


def test_parse_axis_takes_dashes_and_spaces():
    assert parse_axis("batch-size= 32, 64") == ("batch_size", (32, 64))
    assert Sweep((("seed", (1,)),)).keys == ("seed",)


def test_a_trial_logs_and_checkpoints_one_folder_down():
    assert step_log_dir("/logs", "exp", "r1", "train", "trial-03") == "/logs/exp/r1/trial-03/train"
    assert step_log_dir("gs://b/logs", "exp", "r1", "train", "trial-03") == \
        "gs://b/logs/exp/r1/trial-03/train"
    assert step_log_dir("/logs", "exp", "r1", "train") == "/logs/exp/r1/train"
    assert checkpoint_dir_for("/logs", "/ck", "exp", "r1", "train", "trial-03") == \
        "/ck/exp/r1/checkpoints/trial-03/train"
    for bad in ("trial-1", "../trial-01", "trial-01/x", "try-01"):
        with pytest.raises(InputError, match="is not a trial name"):
            validate_trial(bad)


def test_a_loop_iteration_is_not_the_job():
    """kfp.local runs a ParallelFor's tasks as {job}/for-loop-N-iteration-M, one folder down."""
    assert job_of("{{$.pipeline_job_name}}", "/root/job-1/train/model") == "job-1"
    assert job_of("", "/root/job-1/for-loop-2-iteration-3/train/model") == "job-1"
    assert job_of("", "/root/job-1/for-loop-2-iteration-0/for-loop-4-iteration-1/t/m") == "job-1"
    assert job_of("kfp-job", "/root/job-1/for-loop-2-iteration-3/train/model") == "kfp-job"
    # kfp.local fills the job name in as the loop's iteration of the job
    assert job_of("job-1/for-loop-2-iteration-3", "/root/job-1/for-loop-2-iteration-3/t/m") == \
        "job-1"
    assert job_of("", "/root/train/model") == "root"  # as before: the folder above the task


def model_folder(path, trial, val_accuracy, val_loss):
    path.mkdir()
    (path / "model.json").write_text(json.dumps({
        "format": "tbpipe.model.v1", "image_shape": [8, 8, 1], "num_classes": 4,
        "trial": trial, "metrics": {"val_accuracy": val_accuracy, "val_loss": val_loss}}))
    (path / "model.keras").write_bytes(trial.encode())
    return str(path)


TRIALS = [{"trial": "trial-01", "learning_rate": 0.01}, {"trial": "trial-02", "learning_rate":
          0.001}, {"trial": "trial-03", "learning_rate": 0.0001}]


def test_choose_trial_copies_the_best_by_val_accuracy_whatever_the_order(tmp_path):
    models = [model_folder(tmp_path / "c", "trial-03", 0.5, 1.2),
              model_folder(tmp_path / "a", "trial-01", 0.7, 0.9),
              model_folder(tmp_path / "b", "trial-02", 0.9, 0.4)]
    result = choose_trial(models, TRIALS, str(tmp_path / "best"))
    assert result["best_trial"] == "trial-02"
    assert (tmp_path / "best" / "model.keras").read_bytes() == b"trial-02"
    assert [(r["trial"], r["learning_rate"], r["val_accuracy"]) for r in result["trials"]] == [
        ("trial-01", 0.01, 0.7), ("trial-02", 0.001, 0.9), ("trial-03", 0.0001, 0.5)]
    table = trial_table(result).splitlines()
    assert table[0] == "| trial | learning_rate | val_accuracy | val_loss |"
    assert table[3] == "| trial-02 * | 0.001 | 0.9000 | 0.4000 |"


def test_a_tie_keeps_the_earlier_trial(tmp_path):
    models = [model_folder(tmp_path / "b", "trial-02", 0.8, 0.4),
              model_folder(tmp_path / "a", "trial-01", 0.8, 0.5)]
    assert choose_trial(models, TRIALS[:2], str(tmp_path / "best"))["best_trial"] == "trial-01"


def test_choose_trial_refuses_a_missing_or_foreign_trial(tmp_path):
    one = model_folder(tmp_path / "a", "trial-01", 0.7, 0.9)
    with pytest.raises(InputError, match="no model for trial-02: every trial"):
        choose_trial([one], TRIALS[:2], str(tmp_path / "best"))
    other = model_folder(tmp_path / "x", "trial-09", 0.7, 0.9)
    with pytest.raises(InputError, match="a model of no trial of this sweep"):
        choose_trial([one, other], TRIALS[:1], str(tmp_path / "best"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "model.json").write_text(json.dumps({"image_shape": [8, 8, 1], "num_classes": 4,
                                                 "trial": "trial-01"}))
    with pytest.raises(InputError, match="has no final val_accuracy/val_loss"):
        choose_trial([str(bare)], TRIALS[:1], str(tmp_path / "best"))
    assert not (tmp_path / "best").exists()


def test_every_trial_continues_the_run_its_job_claimed(tmp_path):
    """kfp.local names a trial's job {job}/for-loop-N-iteration-M: the same owner, no resume."""
    from tbpipe.components.common.run_claim import claim_run, run_owner

    root = str(tmp_path / "logs")
    claim_run(root, "exp", "r1", run_owner("job-7", f"{tmp_path}/job-7/preprocess/train_data"))
    for i in range(3):
        owner = run_owner(f"job-7/for-loop-2-iteration-{i}",
                          f"{tmp_path}/job-7/for-loop-2-iteration-{i}/train/model")
        claim_run(root, "exp", "r1", owner, resume=False)  # passes: the same job
    with pytest.raises(InputError, match="already exists"):
        claim_run(root, "exp", "r1", run_owner("job-8/for-loop-2-iteration-0", ""))


@pytest.mark.parametrize(("flags", "needle"), [
    (["--sweep", "lr=0.1"], "tbpipe: error: --sweep='lr': is not a train parameter a sweep "
                            "can vary; use one of epochs, batch_size, learning_rate, seed, "
                            "precision, model"),
    (["--sweep", "batch_size="], "tbpipe: error: --sweep batch_size='': has no values; give "
                                 "one or more, e.g. --sweep batch_size=V1,V2"),
    (["--learning-rate", "0.01", "--sweep", "learning_rate=0.1,0.2"],
     "tbpipe: error: --learning-rate=0.01: is swept by --sweep learning_rate; give its values "
     "there only"),
])
def test_run_refuses_a_bad_sweep_before_anything_runs(tmp_path, flags, needle):
    import subprocess

    from tests.helpers import TBPIPE

    proc = subprocess.run([*TBPIPE, "run", *flags, "--log-root", str(tmp_path / "logs"),
                           "--pipeline-root", str(tmp_path / "kfp")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [needle], proc.stderr
    assert not (tmp_path / "logs").exists() and not (tmp_path / "kfp").exists()
