"""The only module that touches tensorboardX internals: a thread queue and deferred events.

tensorboardX hands events to its writer thread through a ``multiprocessing.Queue`` of ten:
every event is pickled through a pipe and a feeder thread, and the caller waits whenever ten
are queued (about 100-250 us per ``add_scalar`` on the 2-core benchmark machine).
:func:`install` gives the writer thread an :class:`EventQueue` instead, and
:func:`add_scalars` / :func:`add_histogram` queue plain numbers and arrays (a lock-free
append) that the writer thread turns into events (docs/performance.md).

All of it rests on private attributes of tensorboardX's ``EventFileWriter``. It is used only
with the tensorboardX versions it was checked against (:data:`CHECKED_VERSIONS`); with any
other version every function here takes tensorboardX's public path instead (slower, same
event files), so a newer tensorboardX still works rather than breaks.

Failed writes (disk full, read-only file system) are recorded, never lost: the writer thread
writes through :class:`SerializedEvents`, which keeps the first OSError (and drops what
follows, as the file is no longer whole) instead of letting the thread die, so the queue
keeps draining and ``add_scalar`` never blocks. On the public path a watch on the thread's
end (``threading.excepthook``) records the OSError that ends tensorboardX's own thread.
:func:`write_error` says what was recorded; :func:`abandon` releases a writer whose close
failed.
"""

from __future__ import annotations

import collections
import contextlib
import math
import queue
import threading
import time
import weakref
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import tensorboardX

from tbpipe.components.common.tensorboard.encode import scalars_event

EVENT_QUEUE_SIZE = 1024
POLL_SECS = 0.25  # how soon the writer thread picks up pending work (each poll costs CPU)
#: ``(major, minor)`` releases whose internals this module was checked against (tests run it).
CHECKED_VERSIONS = ((2, 6),)


def version_checked(version: str = tensorboardX.__version__) -> bool:
    """Whether the fast path may use tensorboardX ``version``'s internals."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) in CHECKED_VERSIONS


#: False: every function here uses tensorboardX's public API only.
ENABLED = version_checked()


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


class SerializedEvents:
    """A tensorboardX ``EventsWriter`` for the writer thread that also takes encoded events.

    The thread hands each queued item to ``write_event``: an ``Event`` proto as tensorboardX
    queues it, or the ``bytes`` of one (:func:`encode.scalars_event`), written as they are.
    The first OSError is kept in ``error`` rather than ending the thread (tensorboardX's
    thread dies on it, silently, and its queue then fills up); what comes after it is
    dropped, since the file may end in a partial record.
    """

    def __init__(self, events_writer) -> None:  # noqa: ANN001 - tensorboardX EventsWriter
        self._events_writer = events_writer
        self.error: OSError | None = None

    def _guarded(self, call, *args: object) -> object:  # noqa: ANN001
        if self.error is not None:
            return None
        try:
            return call(*args)
        except OSError as exc:
            self.error = exc
            return None

    def write_event(self, event: object) -> object:
        """Append one event (a proto or its serialized bytes) to the event file."""
        if isinstance(event, bytes):
            return self._guarded(self._events_writer._write_serialized_event, event)
        return self._guarded(self._events_writer.write_event, event)

    def flush(self) -> object:
        """Flush the event file."""
        return self._guarded(self._events_writer.flush)

    def close(self) -> object:
        """Close the event file."""
        return self._guarded(self._events_writer.close)


class _Record(NamedTuple):
    """Where a writer's write errors are found.

    Its :class:`SerializedEvents` (fast path), and OSErrors that ended tensorboardX writer
    threads since it opened (``threading``'s hook is process-wide, so writers open at once
    share those; a step has one writer at a time).
    """

    thread_errors_from: int
    serialized: SerializedEvents | None = None


_RECORDERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # writer -> _Record
_THREAD_ERRORS: list[OSError] = []
_HOOK_LOCK = threading.Lock()


def _watch_thread_errors() -> None:
    """Chain a ``threading.excepthook`` that records (not prints) writer-thread OSErrors."""
    with _HOOK_LOCK:
        earlier = threading.excepthook
        if getattr(earlier, "tbpipe", False):
            return

        def hook(args: threading.ExceptHookArgs) -> None:
            module = type(args.thread).__module__ if args.thread is not None else ""
            if isinstance(args.exc_value, OSError) and module.startswith("tensorboardX"):
                _THREAD_ERRORS.append(args.exc_value)
                return
            earlier(args)

        hook.tbpipe = True  # type: ignore[attr-defined]
        threading.excepthook = hook


def write_error(writer) -> OSError | None:  # noqa: ANN001
    """The first OSError met writing ``writer``'s events on its writer thread (None: none).

    Safe after ``close`` (it never reopens the writer).
    """
    record = _RECORDERS.get(writer)
    if record is None:
        return None
    if record.serialized is not None and record.serialized.error is not None:
        return record.serialized.error
    ended = _THREAD_ERRORS[record.thread_errors_from:]
    return ended[0] if ended else None


def abandon(writer) -> None:  # noqa: ANN001
    """Release a writer whose flush or close failed on a write; never raises.

    Stops its thread, closes its file (what is still buffered is lost: the disk refused it)
    and marks it closed.
    """
    for file_writer in list((getattr(writer, "all_writers", None) or {}).values()):
        events = getattr(file_writer, "event_writer", None)
        if not ENABLED or events is None or getattr(events, "_closed", True):
            continue
        with contextlib.suppress(Exception):
            if isinstance(events._event_queue, EventQueue) and events._worker is not None:
                events._worker.stop()  # our thread never dies, so it takes the stop signal
            with contextlib.suppress(OSError):
                events._ev_writer._py_recordio_writer.close()  # the descriptor is released
            events._event_queue = events._worker = None
            events._closed = True
    with contextlib.suppress(AttributeError):
        writer.file_writer = writer.all_writers = None


def _event_file_writer(writer):  # noqa: ANN001, ANN202 - tensorboardX EventFileWriter or None
    return getattr(writer._get_file_writer(), "event_writer", None) if ENABLED else None


def install(writer, maxsize: int = EVENT_QUEUE_SIZE) -> bool:
    """Give ``writer``'s event writer thread an :class:`EventQueue`; False if it cannot.

    Events queued before the swap are written first, to the same event file.
    """
    _watch_thread_errors()
    _RECORDERS.setdefault(writer, _Record(len(_THREAD_ERRORS)))
    events = _event_file_writer(writer)
    try:
        from tensorboardX.event_file_writer import _EventLoggerThread

        old, worker = events._event_queue, events._worker
        flush_secs, record_writer = events._flush_secs, events._ev_writer
    except (ImportError, AttributeError):
        return False  # the public path: tensorboardX's own queue and thread
    if isinstance(old, EventQueue) or worker is None:
        return isinstance(old, EventQueue)
    use_native_crc32c()
    worker.stop()  # writes what is queued, then ends
    old.close()
    serialized = SerializedEvents(record_writer)
    _RECORDERS[writer] = _RECORDERS[writer]._replace(serialized=serialized)
    events._event_queue = EventQueue(maxsize)
    events._worker = _EventLoggerThread(events._event_queue, serialized, flush_secs)
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
    if getattr(tbx_crc32c, "_crc32c_native", None) is not None:  # the crc32c package is there
        return True
    if not ENABLED or google_crc32c.implementation != "c" or not hasattr(record_writer,
                                                                          "crc32c"):
        return False
    record_writer.crc32c = google_crc32c.value
    return True


def pending_queue(writer) -> EventQueue | None:  # noqa: ANN001
    """The writer's open :class:`EventQueue`, or None (not installed, closed, public path)."""
    events = _event_file_writer(writer)
    events_queue = getattr(events, "_event_queue", None)
    if isinstance(events_queue, EventQueue) and not events._closed:
        return events_queue
    return None


def add_scalars(writer, values: Mapping[str, float], step: int, prefix: str = "") -> None:
    """Log several scalars at one step as one event: ``add_scalar`` for each, only cheaper.

    With the :class:`EventQueue` the caller only appends the numbers (about 2 us); the event
    is encoded and written on the writer thread. Tags are ``prefix`` + the names given.
    """
    pairs = [(prefix + tag, float(value)) for tag, value in values.items()]
    events_queue = pending_queue(writer)
    if events_queue is not None:
        events_queue.pending.append(_Scalars(int(step), time.time(), pairs))
        return
    for tag, value in pairs:
        writer.add_scalar(tag, value, step)


def add_histogram(writer, tag: str, values: np.ndarray, step: int) -> None:
    """``writer.add_histogram`` with the binning done on the writer thread (a copy is queued)."""
    events_queue = pending_queue(writer)
    if events_queue is None:
        writer.add_histogram(tag, values, step)
        return
    copy = np.array(values, copy=True)
    events_queue.pending.append(_Histogram(tag, copy, int(step), time.time(),
                                           writer.default_bins))


def add_summaries(writer, summaries, step: int | None) -> bool:  # noqa: ANN001
    """Write ready ``Summary`` protos into the writer's own event file; False if it cannot."""
    if not ENABLED:
        return False
    for summary in summaries:
        writer._get_file_writer().add_summary(summary, step)
    return True


def wait_written(writer, timeout: float) -> bool:  # noqa: ANN001
    """Wait (at most ``timeout`` s) until the writer thread wrote everything queued so far.

    tensorboardX's ``flush()`` skips the queue; on the public path only a flush is possible,
    so this returns False there (nothing is known to be written).
    """
    events = _event_file_writer(writer)
    events_queue = getattr(events, "_event_queue", None)
    if events_queue is None:
        return False
    stop_at = time.monotonic() + timeout
    if isinstance(events_queue, EventQueue):
        events_queue.wake()
    while time.monotonic() < stop_at:
        if _drained(events_queue):
            if isinstance(events_queue, EventQueue):
                return True
            time.sleep(0.02)  # tensorboardX's queue: let the thread write what it just got
            return True
        time.sleep(0.01)
    return False


def _drained(events_queue) -> bool:  # noqa: ANN001 - either kind of queue
    if isinstance(events_queue, EventQueue):
        return events_queue.drained()
    # tensorboardX's multiprocessing queue: every put() took the semaphore, get() gives it back.
    return events_queue._sem.get_value() >= events_queue._maxsize


def writer_thread(writer):  # noqa: ANN001, ANN201 - threading.Thread or None
    """The thread writing ``writer``'s event file (benchmarks measure its CPU time)."""
    events = _event_file_writer(writer)
    return getattr(events, "_worker", None)
