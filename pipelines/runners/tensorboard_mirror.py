"""A local mirror of a log root on a store, for TensorBoard's fast loader (``--loader mirror``).

TensorBoard's native data server reads local folders (and real GCS) only. For any other
store, :class:`Mirror` keeps a local folder in step with the log root through tbpipe's storage
layer (fsspec): each sync is one recursive listing of the root and concurrent ranged reads of
what changed (:func:`~tbpipe.components.common.storage.read_ranges`), and the data server
reads the folder as it reads a local log root.

Event files are mirrored as a local writer grows them, so that the data server, which reads a
growing file from where it stopped, takes every event exactly once. tbpipe's sink publishes
an event file ``<file>`` as immutable segments ``<file>.NNNNNN`` and, once the writer has
closed, replaces them by ``<file>.compacted`` (a restart marker, then the same bytes; see
:mod:`tbpipe.components.common.tensorboard.segments`). The mirror writes one local file
``<file>`` per remote event file:

* new segments are appended in order (up to the first one that is missing);
* a compacted object whose local file is new is written whole (marker included: a reader
  takes the marker as a restart at the first step, then every event once);
* a compacted object whose local file already holds segments adds only the bytes the
  segments did not hold (after the marker), whether every segment had been mirrored or some
  were deleted first; what the local file holds is never rewritten;
* an event file published whole (not by tbpipe's sink) is appended to as it grows.

Other files (plugin data: projector configs, profile files) are copied whole when new or
changed (a new ETag or generation), atomically (a temporary file, then a rename). Files whose
remote object is gone (a run deleted or moved away by ``tbpipe runs archive``) are removed
from the mirror, so the view follows the root.

Without a folder of the user's, the mirror lives in a temporary folder removed when the
mirror stops. With one (``tbpipe tensorboard --mirror-dir``), it is kept: a later start
fetches only what changed since (the local files' sizes say what the event files hold; the
versions of the other files are kept in ``.tbpipe-mirror.json``, which also names the root,
so that one folder never mixes two roots).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.common.storage import (
    FileInfo,
    join,
    list_file_info,
    read_ranges,
    write_bytes,
)
from tbpipe.components.common.tensorboard.segments import (
    is_event_file,
    marker_length,
    published_part,
)

#: The most seconds one sync's storage calls retry transient errors (then the sync is
#: reported and retried at the next interval).
SYNC_DEADLINE_S = 30.0
#: Objects read at once (fsspec's concurrent ranged reads).
FETCH_BATCH = 64
#: The most bytes one batch of reads holds in memory; an object larger than a piece is read
#: alone, a piece at a time (profiles and large event files have no size bound).
BATCH_BYTES = 64 << 20
PIECE_BYTES = 8 << 20
STATE_FILE = ".tbpipe-mirror.json"


@dataclasses.dataclass
class SyncStats:
    """What one sync did."""

    listed: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    removed: int = 0
    seconds: float = 0.0


@dataclasses.dataclass
class _EventFile:
    """The local copy of one remote event file."""

    length: int  # bytes the local file holds
    next_seq: int = 0  # the next segment to append
    done: bool = False  # the compacted (or a mismatch, reported once): nothing more to add


@dataclasses.dataclass
class _Remote:
    """The objects of one remote event file in a listing."""

    segments: dict[int, FileInfo] = dataclasses.field(default_factory=dict)
    compacted: str | None = None  # the compacted object's name
    whole: FileInfo | None = None  # an event file published whole


@dataclasses.dataclass
class _Fetch:
    """One ranged read, and what to do with its bytes."""

    rel: str  # the object, relative to the root
    start: int
    end: int
    target: str  # the local file (relative)
    kind: str  # "segment", "compacted", "grown" (an event file's new bytes) or "copy"
    seq: int = -1
    version: str = ""


class _Stopped(Exception):
    """The mirror was stopped during a sync."""


class Mirror:
    """Keeps ``local_dir`` a copy of the log root ``root`` for TensorBoard's fast loader.

    Args:
        root: The log root on a store (``s3://``, ``az://``, ``gs://``...).
        local_dir: The mirror folder; None makes a temporary one, removed by :meth:`stop`.
        interval: Seconds between syncs of the background thread (:meth:`start`).
        deadline: The most seconds one sync's storage calls retry transient errors.
        batch: The most objects read at once.
        piece: Objects larger than this are read alone, this many bytes at a time, so that a
            sync holds at most ``max(BATCH_BYTES, piece)`` bytes whatever the objects' sizes.

    Raises:
        InputError: ``local_dir`` holds files but is not a mirror of ``root``.

    """

    def __init__(self, root: str, local_dir: str | None = None, interval: float = 5.0,
                 deadline: float = SYNC_DEADLINE_S, batch: int = FETCH_BATCH,
                 piece: int = PIECE_BYTES) -> None:
        self.root, self.interval, self.deadline, self.batch = root, interval, deadline, batch
        self.piece = piece
        self.owned = local_dir is None
        self.local_dir = tempfile.mkdtemp(prefix="tbpipe-tb-mirror-") if self.owned \
            else os.path.abspath(local_dir)
        self._events: dict[str, _EventFile] = {}
        self._versions: dict[str, str] = {}  # other files and compacted objects taken
        self._load_state()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.syncs = 0
        self.first: SyncStats | None = None  # the first sync's, before TensorBoard started

    # --- state ----------------------------------------------------------------------------

    def _load_state(self) -> None:
        os.makedirs(self.local_dir, exist_ok=True)
        state_path = os.path.join(self.local_dir, STATE_FILE)
        if os.path.exists(state_path):
            with open(state_path, encoding="utf-8") as handle:
                state = json.load(handle)
            if state.get("root") != self.root:
                raise InputError(f"--mirror-dir {self.local_dir} mirrors {state.get('root')}, "
                                 f"not {self.root}; give a folder of its own to each root")
            self._versions = dict(state.get("versions", {}))
        elif os.listdir(self.local_dir):
            raise InputError(f"--mirror-dir {self.local_dir} holds files but no mirror of "
                             f"{self.root}; give a new or empty folder")

    def _save_state(self) -> None:
        state = {"root": self.root, "versions": self._versions}
        write_bytes(os.path.join(self.local_dir, STATE_FILE),
                    json.dumps(state, sort_keys=True).encode())

    # --- one sync -------------------------------------------------------------------------

    def sync(self) -> SyncStats:
        """List the root once, fetch what changed, remove what is gone.

        Raises:
            StorageError: the root could not be listed or read within the deadline (one
                line); what was fetched before stays, the rest comes at the next sync.

        """
        began = time.monotonic()
        stop_at = began + self.deadline
        listing = list_file_info(self.root, deadline=self.deadline)
        stats = SyncStats(listed=len(listing))
        events: dict[str, _Remote] = {}
        others: dict[str, FileInfo] = {}
        for rel, info in sorted(listing.items()):
            if rel == STATE_FILE:
                continue
            if not is_event_file(rel):
                others[rel] = info
                continue
            name, seq = published_part(rel)
            remote = events.setdefault(name, _Remote())
            if seq is None:
                remote.compacted = rel
                remote.whole = None
            elif seq >= 0:
                remote.segments[seq] = info
                remote.whole = None
            elif remote.compacted is None and not remote.segments:
                remote.whole = info
        fetches = [fetch for name, remote in sorted(events.items())
                   for fetch in self._event_fetches(name, remote, listing)]
        fetches += [_Fetch(rel, 0, info.size, rel, "copy", version=info.version)
                    for rel, info in sorted(others.items())
                    if self._versions.get(rel) != info.version
                    or not os.path.exists(self._local(rel))]
        broken: set[str] = set()  # event files with a piece missing: the rest waits
        for chunk in self._batches(fetches):
            if self._stopping.is_set():
                raise _Stopped
            if chunk[0].end - chunk[0].start > self.piece:  # alone, a piece at a time
                if self._stream(chunk[0], broken, stop_at):
                    stats.fetched += 1
                    stats.fetched_bytes += chunk[0].end - chunk[0].start
                continue
            blobs = read_ranges([join(self.root, f.rel) for f in chunk],
                                [f.start for f in chunk], [f.end for f in chunk],
                                deadline=max(stop_at - time.monotonic(), 1.0),
                                batch_size=self.batch)
            for fetch, blob in zip(chunk, blobs, strict=True):
                if self._apply(fetch, blob, broken):
                    stats.fetched += 1
                    stats.fetched_bytes += len(blob or b"")
        stats.removed = self._remove_gone(set(events) | set(others))
        self._versions = {rel: v for rel, v in self._versions.items() if rel in listing}
        self._save_state()
        stats.seconds = time.monotonic() - began
        self.syncs += 1
        return stats

    def _batches(self, fetches: list[_Fetch]) -> list[list[_Fetch]]:
        """The reads in order, in groups read at once.

        A group holds at most ``batch`` reads and BATCH_BYTES; an object larger than a piece
        is a group of its own (read a piece at a time).
        """
        groups: list[list[_Fetch]] = []
        size = 0
        for fetch in fetches:
            length = fetch.end - fetch.start
            if length > self.piece:
                groups.append([fetch])
                size = BATCH_BYTES  # nothing joins a lone read
                continue
            if not groups or len(groups[-1]) >= self.batch or size + length > BATCH_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(fetch)
            size += length
        return groups

    def _pieces(self, rel: str, start: int, end: int, stop_at: float) -> Iterator[bytes | None]:
        """Bytes ``start`` to ``end`` of the object ``rel``, a piece at a time (None: gone)."""
        for at in range(start, end, self.piece):
            blob, = read_ranges([join(self.root, rel)], [at], [min(at + self.piece, end)],
                                deadline=max(stop_at - time.monotonic(), 1.0))
            yield blob
            if blob is None:
                return

    def _stream(self, fetch: _Fetch, broken: set[str], stop_at: float) -> bool:
        """:meth:`_apply` for an object larger than a piece, holding one piece at a time."""
        pieces = self._pieces(fetch.rel, fetch.start, fetch.end, stop_at)
        path = self._local(fetch.target)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if fetch.kind == "copy":  # whole or not at all: a temporary file, then a rename
            complete = True
            with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), prefix=".tbpipe-part-",
                                             delete=False) as part:
                for blob in pieces:
                    if blob is None:  # gone since the listing
                        complete = False
                        break
                    part.write(blob)
            if not complete:
                os.unlink(part.name)
                return False
            os.replace(part.name, path)
            self._versions[fetch.rel] = fetch.version
            return True
        state = self._events[fetch.target]
        if fetch.target in broken or (fetch.kind == "segment" and fetch.seq != state.next_seq):
            return False
        if fetch.kind == "segment":  # appended whole or not at all
            with tempfile.TemporaryFile(dir=os.path.dirname(path)) as part:
                for blob in pieces:
                    if blob is None:
                        broken.add(fetch.target)
                        return False
                    part.write(blob)
                size = part.tell()
                part.seek(0)
                with open(path, "ab") as handle:
                    shutil.copyfileobj(part, handle)
            state.length += size
            state.next_seq += 1
            return True
        if fetch.kind == "grown":  # appended as it comes: a piece cut short is read again
            for blob in pieces:
                if blob is None:
                    broken.add(fetch.target)
                    return False
                self._append(fetch.target, blob, state)
            return True
        state.done = True  # the compacted object
        self._versions[fetch.rel] = fetch.version
        if not state.length:
            for blob in pieces:
                if blob is None:
                    state.done = False
                    broken.add(fetch.target)
                    return False
                self._append(fetch.target, blob, state)
            return True
        head = next(self._pieces(fetch.rel, 0, min(fetch.end, self.piece), stop_at), None)
        for start in dict.fromkeys((marker_length(head or b""), 0)):  # the writer's bytes
            if self._holds(fetch, start, state.length, stop_at):
                for blob in self._pieces(fetch.rel, start + state.length, fetch.end, stop_at):
                    if blob is None:
                        return True  # moved away since (an archive): it leaves the mirror
                    self._append(fetch.target, blob, state)
                return True
        _say(f"warning: {self._local(fetch.target)} does not match {join(self.root, fetch.rel)}"
             "; left as it is")
        return True

    def _holds(self, fetch: _Fetch, start: int, length: int, stop_at: float) -> bool:
        """Whether the local file holds the object's bytes from ``start`` on.

        Compared a piece at a time.
        """
        compared = 0
        with open(self._local(fetch.target), "rb") as handle:
            for blob in self._pieces(fetch.rel, start, start + length, stop_at):
                if not blob or handle.read(len(blob)) != blob:
                    return False
                compared += len(blob)
        return compared == length

    def _local(self, rel: str) -> str:
        return os.path.join(self.local_dir, *rel.split("/"))

    def _event_fetches(self, name: str, remote: _Remote,
                       listing: dict[str, FileInfo]) -> list[_Fetch]:
        """The reads that bring the local copy of event file ``name`` up to date."""
        state = self._events.get(name) or self._resume(name, remote)
        if state.done:
            return []
        if remote.compacted is not None:
            info = listing[remote.compacted]
            if self._versions.get(remote.compacted) == info.version and state.length:
                state.done = True  # taken by an earlier start of this mirror
                return []
            return [_Fetch(remote.compacted, 0, info.size, name, "compacted",
                           version=info.version)]
        if remote.whole is not None:
            if remote.whole.size <= state.length:
                return []
            return [_Fetch(name, state.length, remote.whole.size, name, "grown")]
        fetches, seq = [], state.next_seq
        while seq in remote.segments:
            rel = f"{name}.{seq:06d}"
            fetches.append(_Fetch(rel, 0, remote.segments[seq].size, name, "segment", seq))
            seq += 1
        return fetches

    def _resume(self, name: str, remote: _Remote) -> _EventFile:
        """The state of a local copy this process has not seen yet (new, or a kept mirror's)."""
        path = self._local(name)
        length = os.path.getsize(path) if os.path.exists(path) else 0
        state = _EventFile(length)
        if length and remote.compacted is None and remote.whole is None:
            held = 0
            while held < length and state.next_seq in remote.segments:
                held += remote.segments[state.next_seq].size
                state.next_seq += 1
            if held != length:
                _say(f"warning: {path} does not match the segments of {join(self.root, name)}; "
                     "left as it is (give a new --mirror-dir to start afresh)")
                state.done = True
        self._events[name] = state
        return state

    def _apply(self, fetch: _Fetch, blob: bytes | None, broken: set[str]) -> bool:
        """Write what ``fetch`` read where it goes; whether anything was taken."""
        if fetch.kind == "copy":
            if blob is None:
                return False
            write_bytes(self._local(fetch.target), blob)
            self._versions[fetch.rel] = fetch.version
            return True
        state = self._events[fetch.target]
        if blob is None or fetch.target in broken:  # deleted since the listing: next sync
            broken.add(fetch.target)
            return False
        if fetch.kind == "segment":
            if fetch.seq != state.next_seq:
                return False
            self._append(fetch.target, blob, state)
            state.next_seq += 1
        elif fetch.kind == "grown":
            self._append(fetch.target, blob, state)
        else:
            self._take_compacted(fetch, blob, state)
        return True

    def _take_compacted(self, fetch: _Fetch, blob: bytes, state: _EventFile) -> None:
        """Add to the local copy what the compacted object holds beyond it, once."""
        state.done = True
        self._versions[fetch.rel] = fetch.version
        if not state.length:
            self._append(fetch.target, blob, state)
            return
        with open(self._local(fetch.target), "rb") as handle:
            held = handle.read()
        for start in dict.fromkeys((marker_length(blob), 0)):  # the writer's bytes begin
            if blob[start:start + len(held)] == held:
                self._append(fetch.target, blob[start + len(held):], state)
                return
        _say(f"warning: {self._local(fetch.target)} does not match {join(self.root, fetch.rel)}"
             "; left as it is")

    def _append(self, rel: str, data: bytes, state: _EventFile) -> None:
        """Append ``data`` to the local event file, in one write (as a local writer grows it)."""
        if not data:
            return
        path = self._local(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(data)
        state.length += len(data)

    def _remove_gone(self, present: set[str]) -> int:
        """Remove local files whose remote file is gone, and the folders left empty."""
        removed = 0
        for folder, _, names in os.walk(self.local_dir, topdown=False):
            for name in names:
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, self.local_dir).replace(os.sep, "/")
                if rel == STATE_FILE or rel in present or name.endswith(".partial"):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                self._events.pop(rel, None)
                removed += 1
            if folder != self.local_dir and not os.listdir(folder):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        return removed

    # --- the sync thread --------------------------------------------------------------------

    def start(self) -> None:
        """Sync every ``interval`` seconds in a background thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="tbpipe-tb-mirror", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing_since = None
        delay = self.interval
        while not self._stopping.wait(delay):
            try:
                self.sync()
            except _Stopped:
                return
            except (StorageError, OSError) as exc:
                if self._stopping.is_set():
                    return
                self.last_error = str(exc)
                if failing_since is None:
                    failing_since = time.monotonic()
                    _say(f"warning: cannot sync the mirror of {self.root} ({exc}); TensorBoard "
                         "serves what it holds, and the sync is retried")
                delay = min(60.0, max(self.interval, (time.monotonic() - failing_since) / 2))
                continue
            if failing_since is not None:
                _say(f"the mirror of {self.root} is in sync again after "
                     f"{time.monotonic() - failing_since:.0f} s")
                failing_since, self.last_error = None, None
            delay = self.interval

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sync thread and remove a temporary mirror folder.

        A sync in progress stops at its next batch. Waits at most ``timeout`` seconds: the
        thread is a daemon, so a read stuck on the network never holds the process.
        """
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.owned:
            shutil.rmtree(self.local_dir, ignore_errors=True)


def _say(message: str) -> None:
    print(f"tbpipe: mirror: {message}", file=sys.stderr, flush=True)
