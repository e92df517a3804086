"""TensorBoard events for log dirs on a store (``gs://``, ``s3://``, ``az://``...), live.

tensorboardX writes events to a local staging file. A background thread publishes, at each
flush interval, only the complete records written since the last publish, as a new
immutable object beside the earlier ones::

    {log_dir}/events.out.tfevents.<time>.<host>.<pid>.<seq:06d>

TensorBoard reads the event files of a run in name order as one stream of records (the
Python loader's DirectoryWatcher and the Rust data server alike), so a growing run shows
live, and bytes sent equal bytes logged. The first segment holds the ``file_version``
header and, on resume, the ``SessionLog.START`` carrying ``purge_step``.

Storage trouble never blocks ``add_scalar``: the local file keeps growing while publishing
is retried in the background with backoff. Memory stays bounded (one segment of at most
``max_segment_bytes`` at a time). On close (success, failure, or SIGTERM turned into
``SystemExit(143)``) what is held is published within ``close_timeout`` seconds; anything
left is reported, and kept on local disk. Then, in what is left of that time, each event
file's segments are compacted into one object (``<file>.compacted``, see
:mod:`.segments`), so a finished step costs TensorBoard one object to list and read; a
compaction cut short only warns: its segments stay, readable as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from tensorboardX import SummaryWriter

from tbpipe.components.common import sigterm
from tbpipe.components.common.errors import StorageError, StorageUnavailable
from tbpipe.components.common.tensorboard import fastpath
from tbpipe.components.common.tensorboard.segments import MAX_SEGMENT_BYTES, SegmentPublisher

DEFAULT_CLOSE_TIMEOUT_S = 20.0
#: Seconds between uploading a compacted object and deleting its segments: twice
#: ``tbpipe tensorboard``'s default reload interval (5 s), so a watching TensorBoard moves
#: past the segment it is reading first (see segments.SegmentPublisher.compact).
COMPACT_GRACE_S = 10.0
OPEN_DEADLINE_S = 5.0
ATTEMPT_DEADLINE_S = 10.0
MAX_BACKOFF_S = 30.0


@dataclasses.dataclass(frozen=True)
class SinkReport:
    """What a closed sink published, and what it could not (kept in ``kept_dir``)."""

    log_dir: str
    segments: int
    published_bytes: int
    unpublished_bytes: int
    kept_dir: str | None
    error: str | None
    compacted_segments: int = 0


class _PublishLoop(threading.Thread):
    """Publishes every ``interval`` seconds (or when woken); backs off while storage fails."""

    def __init__(self, publisher: SegmentPublisher, interval: float) -> None:
        super().__init__(name="tbpipe-tbsink", daemon=True)
        self.publisher, self.interval = publisher, max(interval, 0.1)
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.last_error: str | None = None
        self._failing_since: float | None = None

    def run(self) -> None:  # noqa: D102
        delay = self.interval
        while not self.stopping.is_set():
            self.wake.wait(delay)
            self.wake.clear()
            if self.stopping.is_set():
                return
            delay = self._publish_once()

    def _publish_once(self) -> float:
        try:
            self.publisher.publish(ATTEMPT_DEADLINE_S)
        except Exception as exc:  # noqa: BLE001 - reported and retried: the thread must live
            self.last_error = str(exc) if isinstance(exc, StorageError) else repr(exc)
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                _say(f"warning: cannot publish TensorBoard events ({self.last_error}); "
                     "logging goes on to local disk and publishing is retried in the background")
            failed_for = time.monotonic() - self._failing_since
            return min(MAX_BACKOFF_S, max(self.interval, failed_for / 2))
        if self._failing_since is not None:
            _say(f"TensorBoard events for {self.publisher.log_dir} published again after "
                 f"{time.monotonic() - self._failing_since:.0f} s")
            self._failing_since, self.last_error = None, None
        return self.interval

    def stop(self, timeout: float) -> None:
        """Stop after the publish in progress (waiting at most ``timeout`` seconds)."""
        self.stopping.set()
        self.wake.set()
        self.join(timeout)


def _say(message: str) -> None:
    print(f"tbpipe: tbsink: {message}", file=sys.stderr, flush=True)


class RemoteSummaryWriter(SummaryWriter):
    """A tensorboardX SummaryWriter whose events are published to a remote log dir.

    Args:
        log_dir: The store folder (``gs://``, ``s3://``, ``az://``...) of the step
            (``{log_root}/{experiment}/{run}/{step}``).
        flush_secs: How often events reach the local file and new records are published.
        purge_step: On resume, the first step to keep (see tensorboardX).
        close_timeout: The most seconds ``close`` waits for storage.
        max_segment_bytes: The largest segment (and so the memory the publisher holds).
        compact: On close, compact each event file's segments into one object (it sends the
            file's bytes once more; False leaves the segments).

    Raises:
        StorageError: the log dir cannot be written for a permanent reason (no bucket, no
            permission). Unreachable storage only warns: logging goes on locally.

    """

    def __init__(self, log_dir: str, flush_secs: int = 5, purge_step: int | None = None,
                 close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S,
                 max_segment_bytes: int = MAX_SEGMENT_BYTES, compact: bool = True) -> None:
        self.log_uri, self.close_timeout, self.report = log_dir, close_timeout, None
        self.compact_on_close = compact
        self.closing = False
        self.write_error: OSError | None = None  # the local staging file refused a write
        self.staging = tempfile.mkdtemp(prefix="tbpipe-events-")
        super().__init__(logdir=self.staging, flush_secs=flush_secs, purge_step=purge_step,
                         filename_suffix=f".{os.getpid()}")
        self.publisher = SegmentPublisher(self.staging, log_dir, max_segment_bytes)
        self._loop = _PublishLoop(self.publisher, flush_secs)
        super().flush()
        try:
            self.publisher.publish(OPEN_DEADLINE_S)
        except StorageUnavailable as exc:
            self._loop.last_error = str(exc)
            _say(f"warning: {exc}; logging goes on locally and publishing is retried")
        except StorageError:
            super().close()
            shutil.rmtree(self.staging, ignore_errors=True)
            raise
        self._loop.start()

    def flush(self) -> None:
        """Flush events to the local file and publish them soon (never waits for storage)."""
        super().flush()
        self._loop.wake.set()

    def close(self) -> None:
        """Close the local writer, publish what is left (bounded), and set ``report``."""
        if self.report is not None or self.closing:
            return
        self.closing = True
        try:
            super().close()
        except OSError as exc:  # disk full under the staging folder: reported by open_writer
            self.write_error = exc
            fastpath.abandon(self)
        self.report = self._finish(time.monotonic() + self.close_timeout)

    def _finish(self, stop_at: float) -> SinkReport:
        self._loop.stop(timeout=max(stop_at - time.monotonic(), 0.0))
        error = None
        try:
            self.publisher.publish(max(stop_at - time.monotonic(), 0.0))
            self.publisher.publish_other_files(max(stop_at - time.monotonic(), 0.0))
        except StorageError as exc:
            error = str(exc)
        left = self.publisher.pending_bytes()
        compacted = self._compact(stop_at) if self.compact_on_close and not error else 0
        if error:
            _say(f"warning: {left} bytes of TensorBoard events (and any other files) were not "
                 f"published to {self.log_uri} within {self.close_timeout:.0f} s ({error}); "
                 f"they are kept in {self.staging}")
        else:
            shutil.rmtree(self.staging, ignore_errors=True)
        return SinkReport(self.log_uri, self.publisher.segments, self.publisher.published_bytes,
                          left, self.staging if error else None, error, compacted)

    def _compact(self, stop_at: float) -> int:
        """Compact the published segments (bounded by ``stop_at``); 0 and a warning if not."""
        try:
            return self.publisher.compact(max(stop_at - time.monotonic(), 0.0),
                                          grace=COMPACT_GRACE_S)
        except (StorageError, OSError) as exc:
            _say(f"warning: TensorBoard events in {self.log_uri} stay as segments, not "
                 f"compacted ({exc}); every event is published and readable")
            return 0


@contextlib.contextmanager
def remote_writer(log_dir: str, flush_secs: int = 5, purge_step: int | None = None,
               close_timeout: float = DEFAULT_CLOSE_TIMEOUT_S,
               max_segment_bytes: int = MAX_SEGMENT_BYTES,
               compact: bool = True) -> Iterator[RemoteSummaryWriter]:
    """Yield a :class:`RemoteSummaryWriter`, closed (and published) however the block ends.

    In the main thread, SIGTERM (a preempted node) ends the block with ``SystemExit(143)``
    so that the events are published on the way out; a SIGTERM handler installed before
    is called instead, and is back in place afterwards.
    """
    writer = RemoteSummaryWriter(log_dir, flush_secs, purge_step, close_timeout, max_segment_bytes,
                              compact)
    try:
        with _publish_on_sigterm(writer):
            yield writer
    finally:
        writer.close()


def _publish_on_sigterm(writer: RemoteSummaryWriter) -> contextlib.AbstractContextManager:
    """SIGTERM ends the block with ``SystemExit(143)`` (the close on the way out publishes).

    A handler installed before tbpipe's is called instead. No locks are taken in the handler.
    """

    def on_term() -> None:
        earlier = sigterm.earlier_handler()
        if callable(earlier):
            earlier(signal.SIGTERM, None)
        elif earlier != signal.SIG_IGN and not writer.closing:
            raise SystemExit(128 + signal.SIGTERM)

    return sigterm.on_sigterm(on_term)
