"""The writer thread's cheap paths: C checksums and sparse polling, checked on the bytes."""

import struct

from components.common import tblog, tbqueue
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

    with tblog.open_writer(str(tmp_path)) as writer:
        for step in range(1, 51):
            tblog.add_scalars(writer, {"batch/loss": 1 / step}, step)
    assert tbqueue.use_native_crc32c()
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

    with tblog.open_writer(str(tmp_path)) as writer:
        tblog.add_scalars(writer, {"a": 1.0}, 1)
        events_queue = tbqueue._pending_queue(writer)
        deadline = time.monotonic() + 20 * tbqueue.POLL_SECS
        while not events_queue.drained() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events_queue.drained()
    assert read_scalars(str(tmp_path))["a"] == [(1, 1.0)]
