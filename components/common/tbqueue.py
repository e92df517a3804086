"""The queue between a tensorboardX writer and its writer thread, for threads only.

tensorboardX hands events to its writer thread through a ``multiprocessing.Queue`` of ten:
every event is pickled through a pipe and a feeder thread, and the caller waits whenever ten
are queued (about 100-250 us per ``add_scalar`` on the 2-core benchmark machine).
:func:`queue_in_threads` gives the writer thread an :class:`EventQueue` instead, and
:func:`add_scalars` / :func:`add_histogram` queue plain numbers and arrays (a lock-free
append) that the writer thread turns into events (docs/performance.md). Used by
:func:`components.common.tblog.open_writer`; steps use ``tblog``, not this module.
"""

from __future__ import annotations

import collections
import math
import queue
import time
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from components.common.tbencode import SerializedEvents, scalars_event

EVENT_QUEUE_SIZE = 1024
POLL_SECS = 0.25  # how soon the writer thread picks up pending work (each poll costs CPU)


class _Scalars(NamedTuple):
    """Scalars of one step, queued as plain numbers; the writer thread makes the Event."""

    step: int
    wall_time: float
    values: list[tuple[str, float]]

    def event(self) -> bytes:
        """The serialized Event (encoded directly: no proto objects)."""
        return scalars_event(self.wall_time, self.step, self.values)


class _Histogram(NamedTuple):
    """A histogram's values, queued as an array; the writer thread bins them."""

    tag: str
    values: np.ndarray
    step: int
    wall_time: float
    bins: object

    def event(self):  # noqa: ANN201 - a tensorboardX Event proto
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import histogram

        summary = histogram(self.tag, self.values, self.bins)
        return Event(wall_time=self.wall_time, step=self.step, summary=summary)


_WAKE = object()


class EventQueue(queue.Queue):
    """The queue between a writer and its writer thread, for threads only (no pickling).

    Besides events it takes *pending* work (:func:`add_scalars`, :func:`add_histogram`): a
    lock-free append that the writer thread picks up within ``POLL_SECS`` and turns into an
    Event there, before anything in the queue. It knows when the writer thread has written
    everything: the thread comes back for more only after writing what it took.
    """

    def __init__(self, maxsize: int = EVENT_QUEUE_SIZE) -> None:
        super().__init__(maxsize)
        self.pending: collections.deque = collections.deque()
        self._holding: str | None = None
        self._next: object = None  # taken from the queue, written after the pending work

    def get(self, block: bool = True, timeout: float | None = None) -> object:  # noqa: D102
        if self._holding == "queue":  # the writer thread is back: what it took is written
            self.task_done()
        self._holding = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.pending:
                self._holding = "pending"
                try:
                    return self.pending.popleft().event()
                except Exception as exc:  # noqa: BLE001 - one bad value must not stop the log
                    print(f"tbpipe: skipped an event that cannot be written ({exc})", flush=True)
                    continue
            if self._next is not None:
                item, self._next = self._next, None
                self._holding = "queue"
                return item
            left = POLL_SECS if deadline is None else min(POLL_SECS, deadline - time.monotonic())
            try:
                item = super().get(block, max(left, 0.0))
            except queue.Empty:
                if not block or time.monotonic() >= (deadline or math.inf):
                    raise
                continue
            if item is _WAKE:
                self.task_done()
            else:
                self._next = item  # pending work that came before it goes first

    def wake(self) -> None:
        """Have the writer thread look at the pending work now."""
        self.put(_WAKE)

    def drained(self) -> bool:
        """Whether everything queued so far has been written to the event file."""
        return not self.pending and self._holding != "pending" and self.unfinished_tasks == 0

    def close(self) -> None:
        """Nothing to release (tensorboardX closes its multiprocessing queue here)."""


def queue_in_threads(writer, maxsize: int = EVENT_QUEUE_SIZE) -> bool:
    """Give ``writer``'s event writer thread an :class:`EventQueue`; False if it cannot.

    tensorboardX's ``multiprocessing.Queue`` (10 events) pickles each event through a pipe
    and blocks the caller while the writer thread catches up. Events queued before the swap
    are written first, to the same event file.
    """
    try:
        from tensorboardX.event_file_writer import _EventLoggerThread

        events = writer._get_file_writer().event_writer
        old, worker = events._event_queue, events._worker
        flush_secs, record_writer = events._flush_secs, events._ev_writer
    except (ImportError, AttributeError):
        return False  # another tensorboardX: keep its queue
    if isinstance(old, EventQueue) or worker is None:
        return isinstance(old, EventQueue)
    use_native_crc32c()
    worker.stop()  # writes what is queued, then ends
    old.close()
    events._event_queue = EventQueue(maxsize)
    events._worker = _EventLoggerThread(events._event_queue, SerializedEvents(record_writer),
                                        flush_secs)
    events._worker.start()
    return True


def use_native_crc32c() -> bool:
    """Have tensorboardX checksum records in C; whether it does now.

    Without the optional ``crc32c`` package tensorboardX computes each record's CRC-32C in pure
    Python, over half of the writer thread's time per scalar event. ``google-crc32c`` (a
    dependency of google-cloud-storage) computes the same value in C.
    """
    try:
        import google_crc32c
        from tensorboardX import crc32c as tbx_crc32c
        from tensorboardX import record_writer
    except ImportError:
        return False
    if tbx_crc32c._crc32c_native is not None:  # tensorboardX found the crc32c package
        return True
    if google_crc32c.implementation != "c" or not hasattr(record_writer, "crc32c"):
        return False
    record_writer.crc32c = google_crc32c.value
    return True


def _pending_queue(writer) -> EventQueue | None:  # noqa: ANN001
    events = getattr(writer._get_file_writer(), "event_writer", None)
    events_queue = getattr(events, "_event_queue", None)
    if isinstance(events_queue, EventQueue) and not events._closed:
        return events_queue
    return None


def add_scalars(writer, values: Mapping[str, float], step: int, prefix: str = "") -> None:
    """Log several scalars at one step as one event: ``add_scalar`` for each, only cheaper.

    With :func:`open_writer`'s queue the caller only appends the numbers (about 2 us); the
    event is encoded and written on the writer thread. Tags are ``prefix`` + the names given.
    """
    pairs = [(prefix + tag, float(value)) for tag, value in values.items()]
    events_queue = _pending_queue(writer)
    if events_queue is not None:
        events_queue.pending.append(_Scalars(int(step), time.time(), pairs))
        return
    from tensorboardX.proto.summary_pb2 import Summary

    summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in pairs])
    writer._get_file_writer().add_summary(summary, step)


def add_histogram(writer, tag: str, values: np.ndarray, step: int) -> None:
    """``writer.add_histogram`` with the binning done on the writer thread (a copy is queued)."""
    events_queue = _pending_queue(writer)
    if events_queue is None:
        writer.add_histogram(tag, values, step)
        return
    copy = np.array(values, copy=True)
    events_queue.pending.append(_Histogram(tag, copy, int(step), time.time(),
                                           writer.default_bins))


def drained(events_queue) -> bool:  # noqa: ANN001 - either kind of queue
    """Whether the writer thread has written everything put in ``events_queue`` so far."""
    if isinstance(events_queue, EventQueue):
        return events_queue.drained()
    # tensorboardX's multiprocessing queue: every put() took the semaphore, get() gives it back.
    return events_queue._sem.get_value() >= events_queue._maxsize
