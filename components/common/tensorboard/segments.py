"""Event-file segments: the new whole TFRecords of a local event file, published in order.

An event file is a sequence of TFRecords (``length``, length CRC, data, data CRC). A
:class:`SegmentPublisher` uploads the records of each local file that were not published yet
as a new immutable object named ``<file>.<seq:06d>`` under the log dir, so the objects of one
file, read in name order, hold exactly the file's bytes.
"""

from __future__ import annotations

import os
import struct
import threading
import time

from tbpipe.components.common.errors import StorageUnavailable
from tbpipe.components.common.storage import create_bytes, join, upload_file

MAX_SEGMENT_BYTES = 4 << 20
_LENGTH = struct.Struct("<Q")
_FRAMING = 12 + 4  # length + length CRC before the data, data CRC after it


def complete_length(buf: bytes) -> int:
    """Return the length of the longest prefix of ``buf`` made of whole TFRecords."""
    pos = 0
    while pos + 12 <= len(buf):
        end = pos + _FRAMING + _LENGTH.unpack_from(buf, pos)[0]
        if end > len(buf):
            break
        pos = end
    return pos


def read_records(path: str, offset: int, max_bytes: int) -> bytes:
    """Read the whole records of ``path`` from ``offset``: up to ``max_bytes``, or one larger."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        buf = handle.read(max_bytes)
        if complete_length(buf) == 0:  # the next record is larger than max_bytes
            buf += handle.read(max(12 - len(buf), 0))
            if len(buf) >= 12:
                buf += handle.read(_FRAMING + _LENGTH.unpack_from(buf)[0] - len(buf))
    return buf[:complete_length(buf)]


class SegmentPublisher:
    """Publishes the new whole records of each event file under ``staging`` as segments."""

    def __init__(self, staging: str, log_dir: str, max_segment_bytes: int = MAX_SEGMENT_BYTES):
        self.staging, self.log_dir, self.max_segment_bytes = staging, log_dir, max_segment_bytes
        self._offsets: dict[str, int] = {}
        self._seqs: dict[str, int] = {}
        self._inflight: dict[str, int] = {}  # file -> length of the segment being published
        self.segments = 0
        self.published_bytes = 0
        self.lock = threading.Lock()  # one publish at a time, in order

    def event_files(self, events: bool = True) -> list[str]:
        """Return the staging event files (or, with ``events=False``, the other files)."""
        found = []
        for root, _, names in os.walk(self.staging):
            found += [os.path.relpath(os.path.join(root, n), self.staging)
                      for n in names if ("tfevents" in n) == events]
        return sorted(found)

    def publish_other_files(self, deadline: float) -> None:
        """Upload the files that are not event files (e.g. projector configs) whole."""
        stop_at = time.monotonic() + deadline
        for rel in self.event_files(events=False):
            upload_file(os.path.join(self.staging, rel),
                        join(self.log_dir, rel.replace(os.sep, "/")),
                        deadline=max(stop_at - time.monotonic(), 0.1))

    def pending_bytes(self) -> int:
        """Bytes written locally and not yet published."""
        return sum(os.path.getsize(os.path.join(self.staging, rel)) - self._offsets.get(rel, 0)
                   for rel in self.event_files())

    def segment_uri(self, rel: str, seq: int) -> str:
        """Where segment ``seq`` of the staging file ``rel`` goes."""
        return join(self.log_dir, f"{rel.replace(os.sep, '/')}.{seq:06d}")

    def publish(self, deadline: float) -> int:
        """Publish every whole record written so far, in order; return the bytes sent.

        Raises:
            StorageError: a segment could not be published within ``deadline`` seconds
                (StorageUnavailable when storage was unreachable); it is retried, with the
                same bytes under the same name, on the next call.

        """
        stop_at = time.monotonic() + deadline
        if not self.lock.acquire(timeout=max(deadline, 0.0)):
            raise StorageUnavailable(f"{self.log_dir}: an earlier publish is still running")
        try:
            return self._publish_all(stop_at)
        finally:
            self.lock.release()

    def _publish_all(self, stop_at: float) -> int:
        sent = 0
        for rel in self.event_files():
            while data := self._next_segment(rel):
                remaining = stop_at - time.monotonic()
                if remaining <= 0:
                    raise StorageUnavailable(f"{self.log_dir}: publishing timed out")
                create_bytes(self.segment_uri(rel, self._seqs.get(rel, 0)), data,
                             deadline=remaining)
                self._offsets[rel] = self._offsets.get(rel, 0) + len(data)
                self._seqs[rel] = self._seqs.get(rel, 0) + 1
                self._inflight.pop(rel)
                self.segments += 1
                self.published_bytes += len(data)
                sent += len(data)
        return sent

    def _next_segment(self, rel: str) -> bytes:
        path, offset = os.path.join(self.staging, rel), self._offsets.get(rel, 0)
        if rel in self._inflight:  # a failed attempt: the very same bytes again
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(self._inflight[rel])
        data = read_records(path, offset, self.max_segment_bytes)
        if data:
            self._inflight[rel] = len(data)
        return data
