"""Preemption: kill the train step mid-epoch (SIGTERM, then SIGKILL), run it again, compare.

Each attempt is a real process (tests/reliability/train_harness.py runs the train component
with real artifacts, a checkpoint root and a log root, slowed down per batch). The retry must
resume from the last epoch's checkpoint and end with the metrics of an uninterrupted run, and
TensorBoard (read back from the event files) must show every step of every tag exactly once.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.reliability.attempts import (
    EPOCHS,
    STEPS,
    Run,
    assert_same_as,
    finish,
    wait_until,
)
from tests.reliability.support import one_error_line

pytestmark = pytest.mark.slow


@pytest.fixture
def data(train_inputs):
    return train_inputs


def test_sigterm_mid_epoch_then_the_retry_resumes_as_if_never_stopped(data, reference, tmp_path):
    run = Run(tmp_path, data)
    proc = run.start(1, delay=0.3)
    wait_until(proc, lambda: run.checkpoint_epoch() >= 1 and run.last_step(1) >= STEPS + 2)
    proc.send_signal(signal.SIGTERM)
    err = finish(proc, timeout=60)
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    one_error_line(err, r"^tbpipe: train: error: training stopped by SIGTERM; a retry resumes "
                   r"from the last epoch's checkpoint in .*/ckpt/exp/r1/checkpoints/train")
    done = run.checkpoint_epoch()
    assert 1 <= done < EPOCHS
    assert not (tmp_path / "out1" / "model").exists()  # no model that looks whole
    # On SIGTERM the writer is closed on the way out: every batch logged is on disk.
    logged = {s for s, _ in run.progress(1)}
    assert logged <= {s for s, _ in run.curves()["batch/loss"]}
    assert max(logged) > done * STEPS

    retry = run.start(2, delay=0.0)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as(reference, run, 2, resumed_from=done)


def test_sigkill_mid_epoch_loses_at_most_the_flush_interval_and_resumes(data, reference,
                                                                          tmp_path):
    flush_secs = 1
    run = Run(tmp_path, data)
    proc = run.start(1, delay=0.4, flush_secs=flush_secs)
    wait_until(proc, lambda: run.checkpoint_epoch() >= 1 and run.last_step(1) >= STEPS + 5)
    killed_at = time.time()
    proc.kill()  # SIGKILL: no handler, no close, no flush
    finish(proc, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = run.checkpoint_epoch()
    assert 1 <= done < EPOCHS and not (tmp_path / "out1" / "model").exists()

    # What was logged more than flush_secs (plus a margin) before the kill is readable.
    flushed = {s for s, when in run.progress(1) if when <= killed_at - flush_secs - 0.5}
    assert {STEPS, STEPS + 1} <= flushed  # epoch 2 began long enough before the kill
    before_retry = run.curves()
    assert flushed <= {s for s, _ in before_retry["batch/loss"]}
    assert STEPS in {s for s, _ in before_retry["epoch/loss"]}

    retry = run.start(2, delay=0.0, flush_secs=flush_secs)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as(reference, run, 2, resumed_from=done)  # purge_step: the tail not twice


def test_sigkill_right_after_a_checkpoint_leaves_no_gap(data, reference, tmp_path):
    """A checkpoint is never ahead of the logs: its epoch's events are written before it.

    With a long flush interval the events would still sit in tensorboardX's queue and
    buffer when the kill lands, and the retry (which purges from the checkpoint's step on)
    would show a gap before the checkpoint.
    """
    run = Run(tmp_path, data)
    proc = run.start(1, delay=0.3, flush_secs=120)
    wait_until(proc, lambda: run.checkpoint_epoch() >= 1)
    proc.kill()
    finish(proc, timeout=30)
    done = run.checkpoint_epoch()
    curves = run.curves()
    assert set(range(1, done * STEPS + 1)) <= {s for s, _ in curves["batch/loss"]}
    assert done * STEPS in {s for s, _ in curves["weights/dense_1/kernel"]}

    retry = run.start(2, delay=0.0)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as(reference, run, 2, resumed_from=done)
