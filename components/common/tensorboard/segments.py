"""Event-file segments: the new whole TFRecords of a local event file, published in order.

An event file is a sequence of TFRecords (``length``, length CRC, data, data CRC). A
:class:`SegmentPublisher` uploads the records of each local file that were not published yet
as a new immutable object named ``<file>.<seq:06d>`` under the log dir, so the objects of one
file, read in name order, hold exactly the file's bytes.

When the writer has closed, :meth:`SegmentPublisher.compact` replaces a file's segments by
one event object, ``<file>.compacted``, so a finished step costs TensorBoard one object.
TensorBoard's directory loader reads a run's event files in name order and never goes back
to a name before the one it is reading, so no choice of name alone can serve a reader that
has read every segment (it must not read the data again) and one that starts afresh while
segments remain (it must read them, then the compacted object) with one object. The
compacted object therefore sorts after every segment and starts with a ``SessionLog.START``
at its first step, TensorBoard's restart marker (the one tensorboardX writes for
``purge_step``): a reader that reaches it drops what it holds from that step on, then reads
the same events once. Readers that read every segment, some of them, or none, all end each
reload with every event exactly once, while the segments are deleted one by one and after.
The segments are deleted only once the compacted object is complete, and a grace period
later (TensorBoard's Python loader stops for good at an event file deleted under it, so
readers get a reload to move past the segments first), last first; a failure midway leaves
segments and perhaps the compacted object, which read together still give every event once.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterator

from tbpipe.components.common.errors import StorageUnavailable
from tbpipe.components.common.storage import create_bytes, delete_file, join, upload_file

MAX_SEGMENT_BYTES = 4 << 20
#: The compacted object of ``<file>``: ``<file>.compacted`` sorts after ``<file>.NNNNNN``
#: ("c" > "9") and before the files of a later writer (a later time in the name).
COMPACTED_SUFFIX = ".compacted"
_LENGTH = struct.Struct("<Q")
_FRAMING = 12 + 4  # length + length CRC before the data, data CRC after it


#: A published object of an event file: ``<file>.NNNNNN`` (a segment) or ``<file>.compacted``.
_PUBLISHED = re.compile(r"^(?P<file>.*tfevents.*?)(?:\.(?P<seq>\d{6})|(?P<compacted>\.compacted))$")


def is_event_file(name: str) -> bool:
    """Whether ``name`` is (an object of) an event file, as TensorBoard's loaders tell them."""
    return "tfevents" in name.rsplit("/", 1)[-1]


def published_part(name: str) -> tuple[str, int | None]:
    """The event file that the object ``name`` belongs to, and which part of it it is.

    Returns:
        ``(file, seq)`` for segment ``seq`` of ``file``, ``(file, None)`` for its compacted
        object, and ``(name, -1)`` for an event file published whole (not by tbpipe's sink).

    """
    match = _PUBLISHED.match(name)
    if match is None:
        return name, -1
    return match["file"], None if match["compacted"] else int(match["seq"])


def marker_length(blob: bytes) -> int:
    """The length of the restart marker a compacted object starts with (0 if none).

    The marker (:func:`restart_marker`) is the object's first two records when they are a
    ``file_version`` and a ``SessionLog.START``; the writer's own bytes follow it.
    """
    from tensorboardX.proto import event_pb2

    ends, pos = [], 0
    while len(ends) < 2 and pos + 12 <= len(blob):
        pos += _FRAMING + _LENGTH.unpack_from(blob, pos)[0]
        ends.append(pos)
    if len(ends) < 2 or ends[1] > len(blob):
        return 0
    try:
        version = event_pb2.Event.FromString(blob[12:ends[0] - 4])
        start = event_pb2.Event.FromString(blob[ends[0] + 12:ends[1] - 4])
    except Exception:  # noqa: BLE001 - not events: no marker
        return 0
    restart = start.HasField("session_log") and \
        start.session_log.status == event_pb2.SessionLog.START
    return ends[1] if version.file_version and restart else 0


def complete_length(buf: bytes) -> int:
    """Return the length of the longest prefix of ``buf`` made of whole TFRecords."""
    pos = 0
    while pos + 12 <= len(buf):
        end = pos + _FRAMING + _LENGTH.unpack_from(buf, pos)[0]
        if end > len(buf):
            break
        pos = end
    return pos


def iter_records(path: str) -> Iterator[bytes]:
    """Yield the data of each whole TFRecord of the file ``path``, in order."""
    with open(path, "rb") as handle:
        while len(header := handle.read(12)) == 12:
            data = handle.read(_LENGTH.unpack_from(header)[0])
            if len(handle.read(4)) < 4:
                return
            yield data


def frame_record(data: bytes) -> bytes:
    """``data`` as one TFRecord: length, masked CRC of the length, data, masked CRC of data."""
    from tensorboardX.record_writer import masked_crc32c

    header = _LENGTH.pack(len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


def restart_marker(path: str) -> bytes | None:
    """``file_version`` then a ``SessionLog.START`` at the first summary step of ``path``.

    Both framed, to go before the file's own bytes in its compacted object: the version
    first, so that a reader that met none yet (it began past the first segment) also takes
    the START as a restart. None when the file holds no summary (nothing to hold twice).
    """
    from tensorboardX.proto import event_pb2

    first_step = None
    for data in iter_records(path):
        event = event_pb2.Event.FromString(data)
        if event.HasField("summary"):
            first_step = event.step if first_step is None else min(first_step, event.step)
    if first_step is None:
        return None
    now = time.time()
    version = event_pb2.Event(wall_time=now, file_version="brain.Event:2")
    start = event_pb2.Event(wall_time=now, step=first_step,
                            session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
    return frame_record(version.SerializeToString()) + frame_record(start.SerializeToString())


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

    def compacted_uri(self, rel: str) -> str:
        """Where the compacted object of the staging file ``rel`` goes."""
        return join(self.log_dir, f"{rel.replace(os.sep, '/')}{COMPACTED_SUFFIX}")

    def compact(self, deadline: float, grace: float = 0.0) -> int:
        """Replace the segments of each wholly published event file by one event object.

        Call it once the writer has closed. Per file with more than one segment: upload the
        restart marker and the file's bytes (the segments' bytes, in order) as
        ``<file>.compacted``; then, ``grace`` seconds later, delete the segments, last
        first. Files with a segment still unpublished are left alone.

        Args:
            deadline: The most seconds it may take (grace included).
            grace: Seconds between the compacted objects' upload and the first delete, so
                a TensorBoard reading the folder (reload interval shorter than this) moves
                past the segment it is at before that is deleted: TensorBoard's Python
                loader stops at an event file that disappears under it.

        Returns:
            The number of segments deleted.

        Raises:
            StorageError: storage failed, or ``deadline`` would pass (then nothing is deleted
                before the grace is over); what is published stays readable (segments, the
                compacted object, or both: see the module).

        """
        stop_at = time.monotonic() + deadline
        with self.lock:
            done = []
            for rel in self.event_files():
                path, count = os.path.join(self.staging, rel), self._seqs.get(rel, 0)
                if count < 2 or rel in self._inflight or \
                        self._offsets.get(rel, 0) != os.path.getsize(path):
                    continue
                self._upload_compacted(rel, path, stop_at)
                done.append((rel, count))
            if done and grace > 0:
                if _left(stop_at) <= grace:
                    raise StorageUnavailable(f"{self.log_dir}: no time left to wait {grace:g} s "
                                             "for readers before deleting the segments")
                time.sleep(grace)
            deleted = 0
            for rel, count in done:
                for seq in reversed(range(count)):  # what is left is always a prefix
                    delete_file(self.segment_uri(rel, seq), deadline=_left(stop_at))
                    deleted += 1
        return deleted

    def _upload_compacted(self, rel: str, path: str, stop_at: float) -> None:
        marker = restart_marker(path)
        handle, tmp = tempfile.mkstemp(prefix="tbpipe-compacted-")  # not in staging
        try:
            with os.fdopen(handle, "wb") as out, open(path, "rb") as events:
                out.write(marker or b"")
                shutil.copyfileobj(events, out)
            upload_file(tmp, self.compacted_uri(rel), deadline=_left(stop_at))
        finally:
            os.unlink(tmp)


def _left(stop_at: float) -> float:
    """Seconds left until ``stop_at``; StorageUnavailable once none are."""
    remaining = stop_at - time.monotonic()
    if remaining <= 0:
        raise StorageUnavailable("compacting TensorBoard events timed out")
    return remaining
