"""Preemption: kill the train step mid-epoch (SIGTERM, then SIGKILL), run it again, compare.

Each attempt is a real process (tests/reliability/train_harness.py runs the train component
with real artifacts, a checkpoint root and a log root, slowed down per batch). The retry must
resume from the last epoch's checkpoint and end with the metrics of an uninterrupted run, and
TensorBoard (read back from the event files) must show every step of every tag exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import write_dataset
from tests.reliability.support import REPO, one_error_line

pytestmark = pytest.mark.slow

EPOCHS, BATCH, EXAMPLES = 3, 16, 96
STEPS = EXAMPLES // BATCH  # batches per epoch
PER_ATTEMPT = {"train/devices", "train/gpus"}  # logged once by every attempt, at its first step


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(str(root / "train"), n=EXAMPLES, seed=0)
    write_dataset(str(root / "val"), n=32, seed=1)
    return root


def start(root: Path, data: Path, attempt: int, delay: float, flush_secs: int = 5):
    """Start one attempt of the train step under ``root`` (same run, same checkpoint root)."""
    spec = {"data": str(data), "out": str(root / f"out{attempt}"), "log_root": str(root / "logs"),
            "checkpoint_root": str(root / "ckpt"), "epochs": EPOCHS, "batch_size": BATCH,
            "learning_rate": 0.01, "seed": 7, "flush_secs": flush_secs, "run_name": "r1",
            "delay": delay, "progress": str(root / f"progress{attempt}")}
    Path(spec["out"]).mkdir(parents=True)
    (root / f"spec{attempt}.json").write_text(json.dumps(spec))
    logs = open(root / f"attempt{attempt}.log", "w")  # noqa: SIM115 - the child holds it
    return subprocess.Popen([sys.executable, "-m", "tests.reliability.train_harness",
                             str(root / f"spec{attempt}.json")], cwd=REPO, stdout=logs,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def finish(proc, timeout: float = 240) -> str:
    _, err = proc.communicate(timeout=timeout)
    return err


def progress(root: Path, attempt: int) -> list[tuple[int, float]]:
    path = root / f"progress{attempt}"
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.count(" ") == 1]
    return [(int(step), float(when)) for step, when in rows]


def checkpoint_epoch(root: Path) -> int:
    path = root / "ckpt" / "exp" / "r1" / "checkpoints" / "train" / "state.json"
    try:
        return json.loads(path.read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def wait_until(proc, condition, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the attempt ended early: {finish(proc)[-3000:]}"
        assert time.monotonic() < deadline, "the attempt never reached the point to kill it"
        time.sleep(0.02)


def curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar and histogram (its sum) of a run folder, as TensorBoard reads it back."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    found = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    found.update({t: [(e.step, e.histogram_value.sum) for e in acc.Histograms(t)]
                  for t in tags["histograms"]})
    return found


def result(root: Path, attempt: int) -> dict:
    return json.loads((root / f"out{attempt}" / "result.json").read_text())


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> tuple[dict, dict]:
    """An uninterrupted run of the same step: its result and its TensorBoard curves."""
    root = tmp_path_factory.mktemp("straight")
    proc = start(root, data, 0, delay=0.0)
    assert proc.wait(timeout=240) == 0, finish(proc)
    return result(root, 0), curves(root / "logs" / "exp" / "r1" / "train")


def assert_same_as_reference(root: Path, attempt: int, resumed_from: int, reference) -> None:
    """The retry's result and curves equal the uninterrupted run's: no step twice or missing."""
    expected, expected_curves = reference
    got = result(root, attempt)
    assert got["model"]["resumed_from_epoch"] == resumed_from and got["metrics"]["epochs"] == EPOCHS
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert got["metrics"][key] == pytest.approx(expected["metrics"][key], abs=1e-5), key
    ours = curves(root / "logs" / "exp" / "r1" / "train")
    assert set(ours) == set(expected_curves)
    for tag, points in ours.items():
        steps = [s for s, _ in points]
        assert len(steps) == len(set(steps)), (tag, steps)  # never twice
        if tag in PER_ATTEMPT:
            continue
        assert steps == [s for s, _ in expected_curves[tag]], tag  # none missing
        np.testing.assert_allclose([v for _, v in points], [v for _, v in expected_curves[tag]],
                                   rtol=1e-4, atol=1e-5, err_msg=tag)
    assert [s for s, _ in ours["epoch/loss"]] == [STEPS * (e + 1) for e in range(EPOCHS)]
    assert [s for s, _ in ours["batch/loss"]] == list(range(1, STEPS * EPOCHS + 1))
    assert [s for s, _ in ours["train/devices"]] == [1, resumed_from * STEPS + 1]


def test_sigterm_mid_epoch_then_the_retry_resumes_as_if_never_stopped(data, reference, tmp_path):
    proc = start(tmp_path, data, 1, delay=0.3)
    wait_until(proc, lambda: checkpoint_epoch(tmp_path) >= 1
               and max((s for s, _ in progress(tmp_path, 1)), default=0) >= STEPS + 2)
    proc.send_signal(signal.SIGTERM)
    err = finish(proc, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    one_error_line(err, r"^tbpipe: train: error: training stopped by SIGTERM; a retry resumes "
                   r"from the last epoch's checkpoint in .*/ckpt/exp/r1/checkpoints/train")
    done = checkpoint_epoch(tmp_path)
    assert 1 <= done < EPOCHS
    assert not (tmp_path / "out1" / "model").exists()  # no model that looks whole
    # On SIGTERM the writer is closed on the way out: every batch logged is on disk.
    logged = {s for s, _ in progress(tmp_path, 1)}
    on_disk = {s for s, _ in curves(tmp_path / "logs" / "exp" / "r1" / "train")["batch/loss"]}
    assert logged <= on_disk and max(logged) > done * STEPS

    retry = start(tmp_path, data, 2, delay=0.0)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as_reference(tmp_path, 2, done, reference)


def test_sigkill_mid_epoch_loses_at_most_the_flush_interval_and_resumes(data, reference,
                                                                          tmp_path):
    flush_secs = 1
    proc = start(tmp_path, data, 1, delay=0.4, flush_secs=flush_secs)
    wait_until(proc, lambda: checkpoint_epoch(tmp_path) >= 1
               and max((s for s, _ in progress(tmp_path, 1)), default=0) >= STEPS + 4)
    killed_at = time.time()
    proc.kill()  # SIGKILL: no handler, no close, no flush
    finish(proc, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = checkpoint_epoch(tmp_path)
    assert 1 <= done < EPOCHS and not (tmp_path / "out1" / "model").exists()

    # Events logged more than flush_secs before the kill are readable.
    logged = progress(tmp_path, 1)
    bound = killed_at - flush_secs - 0.5
    flushed = {s for s, when in logged if when <= bound}
    assert STEPS in flushed  # the last batch of epoch 1 is old enough to be on disk
    before_resume = curves(tmp_path / "logs" / "exp" / "r1" / "train")
    assert flushed <= {s for s, _ in before_resume["batch/loss"]}
    assert STEPS in {s for s, _ in before_resume["epoch/loss"]}  # epoch 1's own tags too

    retry = start(tmp_path, data, 2, delay=0.0, flush_secs=flush_secs)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as_reference(tmp_path, 2, done, reference)


def test_sigkill_right_after_a_checkpoint_leaves_no_gap(data, reference, tmp_path):
    """A checkpoint is never ahead of the logs: what precedes it is on disk when it is saved.

    With a long flush interval nothing would reach the event file before the kill, and the
    retry (which purges from the checkpoint's step on) would show a gap before it.
    """
    proc = start(tmp_path, data, 1, delay=0.3, flush_secs=120)
    wait_until(proc, lambda: checkpoint_epoch(tmp_path) >= 1)
    proc.kill()
    finish(proc, timeout=30)
    done = checkpoint_epoch(tmp_path)
    on_disk = {s for s, _ in curves(tmp_path / "logs" / "exp" / "r1" / "train")["batch/loss"]}
    assert set(range(1, done * STEPS + 1)) <= on_disk

    retry = start(tmp_path, data, 2, delay=0.0)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as_reference(tmp_path, 2, done, reference)
