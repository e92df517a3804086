"""Storage faults against the GCS emulator (tests/conftest.py starts it; stop/start = outage).

An outage shorter than the retry deadline is ridden out; a longer one fails the step with
one clear line within a bounded time (no hang, no thread left behind), and what was written
before it stays readable. Storage that accepts connections but never answers (a tiny
stand-in) fails within the same bound. The retry deadline is shortened to a few seconds
(``storage.DEFAULT_DEADLINE_S``, 120 s in production) so a long outage fits in a test.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Metrics

from tbpipe.components import preprocess
from tbpipe.components.common import storage
from tests.reliability.attempts import EPOCHS, STEPS, Run, assert_same_as, finish, wait_until
from tests.reliability.support import frame, one_error_line, whole_outputs

pytestmark = pytest.mark.gcs
WHERE = dict(experiment="exp", run_name="r1", job_name="job")
UNREACHABLE = r"storage unreachable \(.*\); retried with backoff, try again later"


def sink_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tbpipe-tbsink" and t.is_alive()]


def upload_table(uri: str) -> str:
    storage.write_bytes(uri, frame(n=30).to_csv(index=False).encode())
    return uri


def run_preprocess(data: str, out: Path, log_root: str) -> dict:
    outputs = {f"{s}_data": Dataset(uri=str(out / s)) for s in ("train", "val", "test")}
    preprocess.python_func(data=data, **outputs, stats=Metrics(uri=str(out / "stats")),
                           log_root=log_root, **WHERE)
    return outputs


def test_short_outage_is_ridden_out(gcs_emulator, gcs_root, tmp_path):
    data = upload_table(storage.join(gcs_root, "in", "table.csv"))
    log_root = storage.join(gcs_root, "logs")
    gcs_emulator.stop()
    back = threading.Timer(2.0, gcs_emulator.start)
    back.start()
    started = time.monotonic()
    try:
        outputs = run_preprocess(data, tmp_path / "out", log_root)
    finally:
        back.join()
    assert time.monotonic() - started >= 1.5  # it waited for storage, then went on
    assert outputs["train_data"].metadata["num_examples"] > 0
    assert sorted(whole_outputs(tmp_path / "out")) == [f"{s}/dataset.json"
                                                       for s in ("test", "train", "val")]
    logs = gcs_emulator.download(storage.join(log_root, "exp", "r1", "preprocess"),
                                 tmp_path / "logs")
    from tests.helpers import read_scalars

    assert read_scalars(str(logs))["data/rows_read"] == [(0, 30.0)]


def fails_within(seconds: float, capsys, call) -> str:  # noqa: ANN001
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        call()
    took = time.monotonic() - started
    assert exit_info.value.code == 1
    assert took < seconds, f"took {took:.1f} s"
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert sink_threads() == []  # nothing left running in the background
    return one_error_line(captured.err, r"^tbpipe: preprocess: error: ")


def test_long_outage_fails_the_step_clearly_in_bounded_time(gcs_emulator, gcs_root, tmp_path,
                                                            capsys, monkeypatch):
    data = upload_table(storage.join(gcs_root, "in", "table.csv"))
    monkeypatch.setattr(storage, "DEFAULT_DEADLINE_S", 3.0)
    log_root = storage.join(gcs_root, "logs")
    with gcs_emulator.outage():
        line = fails_within(30, capsys, lambda: run_preprocess(data, tmp_path / "out", log_root))
    # the first storage call names what it could not reach: the run's claim, or the data
    assert re.search(rf"({re.escape(data)}|{re.escape(log_root)}/\S+): {UNREACHABLE}",
                     line), line
    assert whole_outputs(tmp_path / "out") == []
    assert storage.read_bytes(data).startswith(b"label,")  # written before: still readable


@pytest.fixture
def silent_storage(monkeypatch):
    """A STAND-IN for storage that accepts connections and never answers (a network black
    hole, the nastiest outage); ``STORAGE_EMULATOR_HOST`` points at it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.getsockname()[1]}")
    storage.reset_filesystems()
    yield
    monkeypatch.undo()
    storage.reset_filesystems()
    server.close()


def test_storage_that_never_answers_cannot_hang_the_step(silent_storage, tmp_path, capsys,
                                                         monkeypatch):
    monkeypatch.setattr(storage, "DEFAULT_DEADLINE_S", 3.0)
    data = "gs://silent-bucket/in/table.csv"
    line = fails_within(30, capsys, lambda: run_preprocess(data, tmp_path / "out",
                                                           str(tmp_path / "logs")))
    assert re.search(rf"{re.escape(data)}: {UNREACHABLE}", line), line
    assert whole_outputs(tmp_path / "out") == []


# ---- the train step, in its own process (tests/reliability/train_harness.py) ---------------

@pytest.mark.slow
def test_outage_mid_training_shorter_than_the_deadline_is_ridden_out(
        gcs_emulator, gcs_root, train_inputs, reference, tmp_path):
    run = Run(tmp_path, train_inputs, log_root=storage.join(gcs_root, "logs"),
              checkpoint_root=storage.join(gcs_root, "ckpt"))
    # held after epoch 2's last batch: the outage covers that epoch's end and its checkpoint
    proc = run.start(1, delay=0.0, flush_secs=1, hold_at=2 * STEPS)
    wait_until(proc, lambda: run.last_step(1) >= 2 * STEPS)
    with gcs_emulator.outage():
        released_at = run.release(1)
        time.sleep(4)
    err = finish(proc)
    assert proc.returncode == 0, err[-3000:]
    logged_at = dict(run.progress(1))
    assert logged_at[2 * STEPS + 1] - released_at >= 3.0  # epoch 2's end waited for storage
    assert_same_as(reference, run, 1, resumed_from=0)


@pytest.mark.slow
def test_outage_mid_training_longer_than_the_deadline_fails_clearly_and_a_retry_resumes(
        gcs_emulator, gcs_root, train_inputs, reference, tmp_path):
    run = Run(tmp_path, train_inputs, log_root=storage.join(gcs_root, "logs"),
              checkpoint_root=storage.join(gcs_root, "ckpt"))
    proc = run.start(1, delay=0.0, flush_secs=1, storage_deadline=3.0, hold_at=2 * STEPS)
    wait_until(proc, lambda: run.last_step(1) >= 2 * STEPS)
    gcs_emulator.stop()
    try:
        down_at = time.monotonic()
        run.release(1)
        err = finish(proc, timeout=240)
        took = time.monotonic() - down_at
    finally:
        gcs_emulator.start()
    # Bounded: event sync (10 s) + the checkpoint's retry deadline (3 s) + the log sink's
    # close (20 s); the slack is for a loaded machine, the bound is what matters.
    assert proc.returncode == 1 and took < 120, (took, err[-3000:])
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("tbpipe: train: error:")]
    assert len(errors) == 1, err[-3000:]
    assert re.search(rf"checkpoint after epoch 2: .*/ckpt/.*: {UNREACHABLE}", errors[0])
    assert "tbpipe: tbsink: warning:" in err  # the log sink said what it could not publish
    assert not (tmp_path / "out1" / "model").exists()

    # What was written before the outage is readable: the epoch-1 checkpoint and its events.
    assert run.checkpoint_epoch() == 1
    curves = run.curves()
    assert set(range(1, STEPS + 1)) <= {s for s, _ in curves["batch/loss"]}
    assert STEPS in {s for s, _ in curves["epoch/loss"]}

    retry = run.start(2, delay=0.0, flush_secs=1)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as(reference, run, 2, resumed_from=1)
    assert run.result(2)["metrics"]["epochs"] == EPOCHS


@pytest.mark.slow
def test_sigkill_loses_at_most_two_flush_intervals_of_gcs_logs_and_resumes(
        gcs_emulator, gcs_root, train_inputs, reference, tmp_path):
    """gs:// logs: tensorboardX writes the local file every flush_secs and the sink publishes
    it every flush_secs, so a SIGKILL (the staging file dies with the pod) loses at most
    about two flush intervals; everything before the last checkpoint was published first."""
    flush_secs = 1
    run = Run(tmp_path, train_inputs, log_root=storage.join(gcs_root, "logs"),
              checkpoint_root=storage.join(gcs_root, "ckpt"))
    proc = run.start(1, delay=0.7, flush_secs=flush_secs)

    def epoch_2_old_enough() -> bool:
        logged = dict(run.progress(1))
        return (run.checkpoint_epoch() >= 1 and STEPS + 1 in logged
                and time.time() - logged[STEPS + 1] >= 2 * flush_secs + 1.0)

    wait_until(proc, epoch_2_old_enough)
    killed_at = time.time()
    proc.kill()
    finish(proc, timeout=30)
    done = run.checkpoint_epoch()
    assert done == 1

    flushed = {s for s, when in run.progress(1) if when <= killed_at - 2 * flush_secs - 0.5}
    assert set(range(1, STEPS + 2)) <= flushed
    assert flushed <= {s for s, _ in run.curves()["batch/loss"]}

    retry = run.start(2, delay=0.0, flush_secs=flush_secs)
    assert retry.wait(timeout=240) == 0, finish(retry)[-3000:]
    assert_same_as(reference, run, 2, resumed_from=done)
