"""Attempts of the train step in their own processes (train_harness.py), and what they left.

One :class:`Run` is one pipeline run's train step: a log root and a checkpoint root (local
folders or gs:// URIs), retried as attempts 1, 2, ... that share them, as KFP's retries do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tbpipe.components.common import storage
from tests.reliability.support import REPO

EPOCHS, BATCH, EXAMPLES = 3, 16, 96
STEPS = EXAMPLES // BATCH  # batches per epoch
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")
PER_ATTEMPT = {"train/devices", "train/gpus"}  # logged once by every attempt, at its first step


class Run:
    """The train step of run ``exp/r1`` under ``root``; logs and checkpoints where given."""

    def __init__(self, root: Path, data: Path, log_root: str | None = None,
                 checkpoint_root: str | None = None) -> None:
        self.root, self.data = root, data
        self.log_root = log_root or str(root / "logs")
        self.checkpoint_root = checkpoint_root or str(root / "ckpt")
        self.log_dir = storage.join(self.log_root, "exp", "r1", "train")
        self.state_uri = storage.join(self.checkpoint_root, "exp", "r1", "checkpoints", "train",
                                      "state.json")

    def start(self, attempt: int, delay: float, flush_secs: int = 5,
              storage_deadline: float | None = None,
              hold_at: int | None = None) -> subprocess.Popen:
        """Start attempt ``attempt`` (sleeping ``delay`` s after each batch).

        With ``hold_at`` the attempt waits after logging that global step until
        :meth:`release` is called: a fault is then injected at exactly that point.
        """
        spec = {"data": str(self.data), "out": str(self.root / f"out{attempt}"),
                "log_root": self.log_root, "checkpoint_root": self.checkpoint_root,
                "epochs": EPOCHS, "batch_size": BATCH, "learning_rate": 0.01, "seed": 7,
                "flush_secs": flush_secs, "run_name": "r1", "delay": delay,
                "progress": str(self.root / f"progress{attempt}"),
                "storage_deadline": storage_deadline, "hold_at": hold_at}
        Path(spec["out"]).mkdir(parents=True)
        (self.root / f"spec{attempt}.json").write_text(json.dumps(spec))
        with open(self.root / f"attempt{attempt}.log", "w") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.train_harness",
                 str(self.root / f"spec{attempt}.json")], cwd=REPO, stdout=out,
                stderr=subprocess.PIPE, text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    def progress(self, attempt: int) -> list[tuple[int, float]]:
        """``(global step, wall time)`` of every batch the attempt logged."""
        path = self.root / f"progress{attempt}"
        rows = [r.split() for r in path.read_text().splitlines()] if path.exists() else []
        return [(int(r[0]), float(r[1])) for r in rows if len(r) == 2]

    def release(self, attempt: int) -> float:
        """Let an attempt held at ``hold_at`` go on; returns the wall time it was released."""
        (self.root / f"progress{attempt}.release").touch()
        return time.time()

    def last_step(self, attempt: int) -> int:
        return max((s for s, _ in self.progress(attempt)), default=0)

    def checkpoint_epoch(self) -> int:
        """The epoch of the last checkpoint (0: none)."""
        try:
            return json.loads(storage.read_bytes(self.state_uri, deadline=5))["epoch"]
        except (storage.StorageError, ValueError):
            return 0

    def result(self, attempt: int) -> dict:
        return json.loads((self.root / f"out{attempt}" / "result.json").read_text())

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """Every scalar and histogram (its sum) of the log dir, as TensorBoard reads it."""
        if not storage.is_remote(self.log_dir):
            return read_curves(Path(self.log_dir))
        with tempfile.TemporaryDirectory() as tmp:
            for rel in storage.list_files(self.log_dir):
                storage.download_file(storage.join(self.log_dir, rel), os.path.join(tmp, rel))
            return read_curves(Path(tmp))


def finish(proc: subprocess.Popen, timeout: float = 240) -> str:
    """Wait for an attempt to end; its stderr."""
    return proc.communicate(timeout=timeout)[1]


def wait_until(proc: subprocess.Popen, condition, timeout: float = 180) -> None:  # noqa: ANN001
    """Poll ``condition`` while the attempt runs (fail if it ends first)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the attempt ended early: {finish(proc)[-3000:]}"
        assert time.monotonic() < deadline, "the attempt never reached the point to kill it"
        time.sleep(0.02)


def read_curves(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = acc.Tags()
    found = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    found.update({t: [(e.step, e.histogram_value.sum) for e in acc.Histograms(t)]
                  for t in tags["histograms"]})
    return found


def write_data(root: Path) -> Path:
    from tests.helpers import write_dataset

    write_dataset(str(root / "train"), n=EXAMPLES, seed=0)
    write_dataset(str(root / "val"), n=32, seed=1)
    return root


def assert_same_as(reference: tuple[dict, dict], run: Run, attempt: int,
                   resumed_from: int) -> None:
    """The retry's result and curves equal an uninterrupted run's: no step twice or missing."""
    expected, expected_curves = reference
    got = run.result(attempt)
    assert got["model"]["resumed_from_epoch"] == resumed_from
    assert got["metrics"]["epochs"] == EPOCHS
    for key in METRICS:
        assert got["metrics"][key] == pytest.approx(expected["metrics"][key], abs=1e-5), key
    ours = run.curves()
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
    attempts = [1] + ([resumed_from * STEPS + 1] if resumed_from else [])
    assert [s for s, _ in ours["train/devices"]] == attempts  # one point per attempt
