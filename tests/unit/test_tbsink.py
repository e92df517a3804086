"""The gs:// event sink, against a real local GCS server (gcp-storage-emulator)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from tensorboardX import SummaryWriter

from tbpipe.components.common import storage
from tbpipe.components.common.errors import StorageError
from tbpipe.components.common.tensorboard.segments import complete_length, read_records
from tbpipe.components.common.tensorboard.sink import remote_writer
from tests.helpers import read_scalars, read_tags


def _local_event_file(tmp_path, steps: int) -> str:
    with SummaryWriter(str(tmp_path / "local")) as writer:
        for step in range(steps):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
    (name,) = os.listdir(tmp_path / "local")
    return str(tmp_path / "local" / name)


def test_complete_length_stops_at_a_partial_record(tmp_path):
    data = open(_local_event_file(tmp_path, 50), "rb").read()
    assert complete_length(data) == len(data)
    cut = complete_length(data[:len(data) - 3])
    assert 0 < cut < len(data) - 3 and complete_length(data[:cut]) == cut


def test_read_records_bounds_the_chunk_but_returns_a_large_record_whole(tmp_path):
    path = _local_event_file(tmp_path, 200)
    chunk = read_records(path, 0, 500)
    assert 0 < len(chunk) <= 500 and complete_length(chunk) == len(chunk)
    first = read_records(path, 0, 5)  # smaller than one record: that record whole
    assert len(first) > 5 and complete_length(first) == len(first)


def _segments(uri: str) -> list[bytes]:
    return [storage.read_bytes(storage.join(uri, name)) for name in storage.list_files(uri)]


def _scalars(gcs_emulator, uri, tmp_path):
    return read_scalars(str(gcs_emulator.download(uri, tmp_path / "copy")))


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.gcs
def test_segments_are_published_while_logging(gcs_emulator, gcs_root, tmp_path):
    uri = storage.join(gcs_root, "exp/run/train")
    with remote_writer(uri, flush_secs=1) as writer:
        for step in range(100):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        seen = _wait_for(lambda: len(_segments(uri)) >= 2, timeout=15)
        assert seen, "no segment with the logged steps before close"
        live = _scalars(gcs_emulator, uri, tmp_path / "live")
    assert [s for s, _ in live["loss"]] == list(range(100))
    assert writer.report.unpublished_bytes == 0 and writer.report.kept_dir is None
    assert not os.path.exists(writer.staging)


@pytest.mark.gcs
def test_only_new_bytes_are_sent(gcs_emulator, gcs_root, tmp_path, monkeypatch):
    uri = storage.join(gcs_root, "exp/run/train")
    from gcsfs import GCSFileSystem

    sent = []
    original = GCSFileSystem._request

    async def counting(self, method, path, *args, data=None, **kwargs):  # every HTTP request
        if method in ("POST", "PUT") and data is not None:
            sent.append(len(data.getbuffer()) if hasattr(data, "getbuffer") else len(data))
        return await original(self, method, path, *args, data=data, **kwargs)

    monkeypatch.setattr(GCSFileSystem, "_request", counting)
    rng = np.random.default_rng(0)
    with remote_writer(uri, flush_secs=1, compact=False) as writer:  # the live segments
        for step in range(4000):
            writer.add_scalar("loss", float(rng.random()), step)
            writer.add_scalar("accuracy", float(rng.random()), step)
            if step % 100 == 0:
                writer.add_histogram("weights", rng.normal(size=256), step)
            if step % 1000 == 999:
                time.sleep(1.2)  # a few flush intervals: several segments
    segments = _segments(uri)
    logged = sum(len(s) for s in segments)
    assert len(segments) >= 3 and writer.report.published_bytes == logged
    assert all(complete_length(s) == len(s) for s in segments)  # whole records only
    ratio = sum(sent) / logged
    assert 1.0 <= ratio <= 1.1, ratio
    scalars = _scalars(gcs_emulator, uri, tmp_path)
    assert [s for s, _ in scalars["loss"]] == list(range(4000))  # each step once, in order
    assert "weights" in read_tags(str(tmp_path / "copy"))["histograms"]


@pytest.mark.gcs
def test_memory_is_bounded_by_the_segment_size(gcs_root):
    uri = storage.join(gcs_root, "run/train")
    with remote_writer(uri, flush_secs=60, max_segment_bytes=2048, compact=False) as writer:
        for step in range(1000):
            writer.add_scalar("loss", float(step), step)
    sizes = [len(s) for s in _segments(uri)]
    assert len(sizes) > 5 and max(sizes) <= 2048


@pytest.mark.gcs
def test_purge_step_drops_the_interrupted_attempts_tail(gcs_emulator, gcs_root, tmp_path):
    uri = storage.join(gcs_root, "exp/run/train")
    with remote_writer(uri, flush_secs=60) as writer:
        for step in range(10):
            writer.add_scalar("loss", 100.0 + step, step)
    time.sleep(1.1)  # event file names carry whole seconds: the resume sorts after
    with remote_writer(uri, flush_secs=60, purge_step=5) as writer:
        for step in range(5, 12):
            writer.add_scalar("loss", float(step), step)
    points = _scalars(gcs_emulator, uri, tmp_path)["loss"]
    assert [s for s, _ in points] == list(range(12))
    assert [v for s, v in points if s >= 5] == [float(s) for s in range(5, 12)]


@pytest.mark.gcs
def test_missing_bucket_fails_at_open(gcs_emulator):
    uri = "gs://no-such-bucket-tbpipe/exp/run/train"
    started = time.monotonic()
    with pytest.raises(StorageError, match="no-such-bucket-tbpipe"):
        with remote_writer(uri):
            pass
    assert time.monotonic() - started < 5


@pytest.mark.gcs
def test_outage_never_blocks_logging_and_close_is_bounded(gcs_emulator, gcs_root, capfd):
    uri = storage.join(gcs_root, "exp/run/train")
    try:
        with remote_writer(uri, flush_secs=1, close_timeout=3) as writer:
            writer.add_scalar("loss", 1.0, 0)
            gcs_emulator.stop()
            started = time.monotonic()
            for step in range(1, 3000):
                writer.add_scalar("loss", 1.0 / step, step)
            assert time.monotonic() - started < 5  # logging is not held up by storage
            time.sleep(1.5)  # a background attempt fails meanwhile
            closing = time.monotonic()
        assert time.monotonic() - closing < 3 + 2
        report = writer.report
        assert report.unpublished_bytes > 0 and report.error
        assert report.kept_dir and os.listdir(report.kept_dir)
        assert "were not published" in capfd.readouterr().err
    finally:
        gcs_emulator.start()


@pytest.mark.gcs
def test_background_retry_publishes_after_an_outage(gcs_emulator, gcs_root, tmp_path):
    uri = storage.join(gcs_root, "exp/run/train")
    with remote_writer(uri, flush_secs=1) as writer:
        with gcs_emulator.outage():
            for step in range(200):
                writer.add_scalar("loss", float(step), step)
            time.sleep(2)
        assert _wait_for(lambda: writer.publisher.pending_bytes() == 0, timeout=40)
        steps = [s for s, _ in _scalars(gcs_emulator, uri, tmp_path)["loss"]]
        assert steps == list(range(200))  # published in the background, before close
    assert writer.report.unpublished_bytes == 0


@pytest.mark.gcs
def test_sigterm_publishes_what_was_logged(gcs_emulator, gcs_root, tmp_path):
    uri = storage.join(gcs_root, "exp/run/train")
    script = textwrap.dedent(f"""
        import time
        from tbpipe.components.common.tensorboard.sink import remote_writer
        with remote_writer({uri!r}, flush_secs=600) as writer:
            for step in range(500):
                writer.add_scalar("loss", float(step), step)
            print("ready", flush=True)
            time.sleep(600)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        child.kill()
    steps = [s for s, _ in _scalars(gcs_emulator, uri, tmp_path)["loss"]]
    assert steps == list(range(500))


@pytest.mark.gcs
def test_other_files_are_uploaded_whole_on_close(gcs_root):
    uri = storage.join(gcs_root, "exp/run/embed")
    with remote_writer(uri, flush_secs=60) as writer:
        writer.add_embedding(np.eye(4), metadata=["a", "b", "c", "d"], tag="emb")
    names = storage.list_files(uri)
    assert "projector_config.pbtxt" in names
    assert any(n.endswith("tensors.tsv") for n in names)


@pytest.mark.gcs
def test_an_earlier_sigterm_handler_is_called_then_restored(gcs_root):
    calls = []

    def earlier(signum, frame):
        calls.append(signum)

    before = signal.signal(signal.SIGTERM, earlier)
    try:
        with remote_writer(storage.join(gcs_root, "run/train"), flush_secs=60) as writer:
            writer.add_scalar("loss", 1.0, 0)
            os.kill(os.getpid(), signal.SIGTERM)
            assert _wait_for(lambda: calls, timeout=5)
        assert calls == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is earlier
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.gcs
@pytest.mark.slow
def test_a_step_whose_events_were_not_published_does_not_succeed(gcs_emulator, gcs_root):
    """open_writer (what steps use): the block succeeded, storage never came back before the
    close gave up: one line naming the log dir, never SUCCESS with less than was logged."""
    from tbpipe.components.common.tensorboard.writer import open_writer

    uri = storage.join(gcs_root, "exp/run/train")
    try:
        with pytest.raises(StorageError, match=r"could not be published .*; they are kept in"):
            with open_writer(uri, flush_secs=1) as writer:
                writer.add_scalar("loss", 1.0, 0)
                gcs_emulator.stop()
                for step in range(1, 200):
                    writer.add_scalar("loss", 1.0 / step, step)
    finally:
        gcs_emulator.start()


@pytest.mark.gcs
def test_a_closed_writer_leaves_one_event_object_per_file(gcs_emulator, gcs_root, tmp_path):
    uri = storage.join(gcs_root, "exp/run/train")
    with remote_writer(uri, flush_secs=1) as writer:
        for step in range(300):
            writer.add_scalar("loss", float(step), step)
            if step % 100 == 99:
                writer.flush()
                assert _wait_for(lambda: writer.publisher.pending_bytes() == 0, 15), step
    report = writer.report
    assert report.segments >= 3 and report.compacted_segments == report.segments
    (name,) = storage.list_files(uri)
    assert name.endswith(".compacted") and "tfevents" in name
    steps = [s for s, _ in _scalars(gcs_emulator, uri, tmp_path)["loss"]]
    assert steps == list(range(300))  # each step once
