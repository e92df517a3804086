"""The writer thread's cheap paths: C checksums and sparse polling, checked on the bytes."""

import struct

import pytest

from tbpipe.components.common.tensorboard import fastpath
from tbpipe.components.common.tensorboard.writer import open_writer
from tests.helpers import read_scalars


def _records(path):
    """(header, header crc, data, data crc) of every record in an event file."""
    data, at, records = path.read_bytes(), 0, []
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        records.append((header, header_crc, body, body_crc))
        at += 16 + length
    return records


def _masked_python_crc(data):
    """TensorFlow's masked CRC-32C, computed with tensorboardX's pure-Python table."""
    from tensorboardX.crc32c import _crc32c

    crc = _crc32c(data) & 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_records_are_checksummed_in_c_and_the_checksums_are_right(tmp_path):
    import google_crc32c
    from tensorboardX import crc32c, record_writer

    with open_writer(str(tmp_path)) as writer:
        for step in range(1, 51):
            fastpath.add_scalars(writer, {"batch/loss": 1 / step}, step)
    assert fastpath.use_native_crc32c()
    if crc32c._crc32c_native is None:  # no crc32c package: tbpipe swapped in google-crc32c
        assert record_writer.crc32c is google_crc32c.value
    (event_file,) = tmp_path.glob("events.out.tfevents.*")
    records = _records(event_file)
    assert len(records) == 51  # the file version record + 50 steps
    for header, header_crc, body, body_crc in records:
        assert header_crc == _masked_python_crc(header)
        assert body_crc == _masked_python_crc(body)
    assert len(read_scalars(str(tmp_path))["batch/loss"]) == 50


def test_pending_scalars_reach_the_file_without_a_wake(tmp_path):
    """The writer thread polls for pending work; it picks it up within POLL_SECS."""
    import time

    with open_writer(str(tmp_path)) as writer:
        fastpath.add_scalars(writer, {"a": 1.0}, 1)
        events_queue = fastpath.pending_queue(writer)
        deadline = time.monotonic() + 20 * fastpath.POLL_SECS
        while not events_queue.drained() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events_queue.drained()
    assert read_scalars(str(tmp_path))["a"] == [(1, 1.0)]


def test_scalar_events_are_encoded_exactly_as_protobuf_would():
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    from tbpipe.components.common.tensorboard.encode import scalars_event

    cases = [(1.7e9, 1, (("batch/loss", 0.25), ("batch/accuracy", 0.9))),
             (0.0, 0, (("zero", 0.0),)),  # defaults: protobuf leaves wall_time and step out
             (1234.5, 2**40 + 7, (("é/unicode tag", -3.5e38), ("inf", float("inf")))),
             (1.0, -1, (("negative step", 1.0),)),  # int64 as ten varint bytes
             (2.0, 300, (("t" * 200, 1e-45),)),  # a tag longer than one varint byte
             (3.0, 5, ())]
    for wall_time, step, values in cases:
        proto = Event(wall_time=wall_time, step=step, summary=Summary(value=[
            Summary.Value(tag=tag, simple_value=value) for tag, value in values]))
        assert scalars_event(wall_time, step, values) == proto.SerializeToString()
        parsed = Event.FromString(scalars_event(wall_time, step, values))
        assert (parsed.step, [v.tag for v in parsed.summary.value]) == (
            step, [tag for tag, _ in values])


def test_encoded_scalars_and_proto_events_share_one_file_in_order(tmp_path):
    with open_writer(str(tmp_path)) as writer:
        for step in range(1, 6):
            fastpath.add_scalars(writer, {"batch/loss": step / 10}, step)  # encoded bytes
            writer.add_scalar("proto/loss", step / 10, step)  # tensorboardX's own Event
    scalars = read_scalars(str(tmp_path))
    expected = [(s, struct.unpack("<f", struct.pack("<f", s / 10))[0]) for s in range(1, 6)]
    assert scalars["batch/loss"] == expected
    assert scalars["proto/loss"] == expected


def test_version_check_gates_the_internals():
    assert fastpath.version_checked("2.6.5") and fastpath.version_checked("2.6")
    assert not fastpath.version_checked("2.7.0")
    assert not fastpath.version_checked("3.0.1") and not fastpath.version_checked("dev")


def test_public_path_writes_the_same_events(tmp_path, monkeypatch):
    """With a tensorboardX the fast path was not checked against, the public API is used."""
    import numpy as np

    from tbpipe.components.common.tensorboard.writer import log_hparams, sync_events
    from tests.helpers import read_scalars, read_tags

    monkeypatch.setattr(fastpath, "ENABLED", False)
    with open_writer(str(tmp_path)) as writer:
        assert fastpath.pending_queue(writer) is None
        for step in range(1, 6):
            fastpath.add_scalars(writer, {"loss": 1 / step, "accuracy": step / 5}, step,
                                 prefix="batch/")
        fastpath.add_histogram(writer, "weights/w", np.arange(10.0), 5)
        log_hparams(writer, {"lr": 0.1}, {"hparam/accuracy": 0.9}, step=5)
        assert sync_events(writer, timeout=1) is False  # nothing known: only flushed
    scalars = read_scalars(str(tmp_path))
    assert [s for s, _ in scalars["batch/loss"]] == [1, 2, 3, 4, 5]
    assert scalars["hparam/accuracy"][-1][1] == pytest.approx(0.9)
    assert "weights/w" in read_tags(str(tmp_path))["histograms"]


def test_only_fastpath_touches_tensorboardx_internals():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    private = ("_get_file_writer", "_event_queue", "_worker", "_ev_writer",
               "_write_serialized_event", "_crc32c_native", "_EventLoggerThread")
    touching = sorted(str(p.relative_to(root)) for folder in ("components", "pipelines")
                      for p in (root / folder).rglob("*.py")
                      if any(re.search(rf"\b{name}\b", p.read_text()) for name in private))
    assert touching == ["components/common/tensorboard/fastpath.py"]
