"""Old runs out of the shared TensorBoard's view, kept: ``tbpipe runs archive``.

TensorBoard serves every run under the log root, and a year of nightly runs is hundreds of
them: its start, its memory and the dashboard's run list grow with each (docs/performance.md,
section 8b). Archiving moves whole runs ``{log_root}/{experiment}/{run}`` to the same place
under a sibling root, ``{log_root}-archive`` by default: outside the served tree, so
TensorBoard never lists it, and a root of its own, so ``tbpipe tensorboard --log-root
{log_root}-archive`` and ``tbpipe runs --log-root {log_root}-archive`` show what was archived,
and the same command with the roots swapped brings a run back.

A move is a copy and a delete per file (a rename of the whole folder where both roots are
local folders on one file system). The run's markers go last: its ``_run.json`` and then its
``_summary.json`` are written to the archive after every other file, so the archived copy is
listed as a run only once complete, and are deleted from the log root after every other file,
so a move cut short leaves the run listed where it was, and running the command again finishes
it (copies are whole-file and idempotent).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import validate_name
from tbpipe.components.common.run_claim import RUN_MARKER
from tbpipe.components.common.run_summary import SUMMARY_FILE, list_runs

ARCHIVE_SUFFIX = "-archive"
_DAY = 86_400.0


def archive_root_for(log_root: str) -> str:
    """The default archive of ``log_root``: its sibling ``{log_root}-archive``."""
    return log_root.rstrip("/") + ARCHIVE_SUFFIX


@dataclasses.dataclass(frozen=True)
class ArchiveSelection:
    """Which runs to archive; every criterion given must hold (at least one is needed).

    Attributes:
        older_than_days: Runs started more than this many days ago (None: any age).
        keep_latest: Keep this many newest runs of each experiment (None: keep none back).
        runs: Only these runs, as ``experiment/run`` (empty: any run). Only a run named here
            is archived while unfinished (it may still be running).
    """

    older_than_days: float | None = None
    keep_latest: int | None = None
    runs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.older_than_days is None and self.keep_latest is None and not self.runs:
            raise InputError("runs archive: say which runs: --older-than DAYS, --keep-latest N "
                             "or --run EXPERIMENT/RUN")
        if self.older_than_days is not None and not self.older_than_days >= 0:
            raise InputError(f"--older-than {self.older_than_days}: use a number of days >= 0")
        if self.keep_latest is not None and self.keep_latest < 0:
            raise InputError(f"--keep-latest {self.keep_latest}: use a count >= 0")
        for name in self.runs:
            experiment, _, run = name.partition("/")
            if not run:
                raise InputError(f"--run {name!r}: use EXPERIMENT/RUN, e.g. default/nightly-1")
            validate_name("experiment", experiment)
            validate_name("run", run)


@dataclasses.dataclass(frozen=True)
class ArchivedRun:
    """One run moved (or, in a dry run, that would be)."""

    experiment: str
    run: str
    files: int


def select_runs(runs: Sequence[dict], selection: ArchiveSelection,
                now: float | None = None) -> list[dict]:
    """The runs of ``runs`` (``list_runs`` entries, newest first) that ``selection`` picks."""
    now = time.time() if now is None else now
    named = set(selection.runs)
    rank: dict[str, int] = {}
    chosen = []
    for run in runs:  # newest first: a run's rank in its experiment counts up from 0
        position = rank.get(run["experiment"], 0)
        rank[run["experiment"]] = position + 1
        name = f"{run['experiment']}/{run['run']}"
        if named and name not in named:
            continue
        if run.get("status", "finished") != "finished" and name not in named:
            continue  # unfinished or unreadable: maybe still running; only by name
        if selection.keep_latest is not None and position < selection.keep_latest:
            continue
        if selection.older_than_days is not None:
            started = run.get("started") or run.get("finished")
            if started is None or now - started <= selection.older_than_days * _DAY:
                continue
        chosen.append(run)
    return chosen


def archive_runs(log_root: str, selection: ArchiveSelection, archive_root: str = "",
                 dry_run: bool = False) -> list[ArchivedRun]:
    """Move the runs ``selection`` picks from ``log_root`` to ``archive_root``.

    Args:
        log_root: The served log root (a folder or a store URI).
        selection: Which runs.
        archive_root: Where to (default ``{log_root}-archive``); any root, any store.
        dry_run: Only say which runs would move.

    Returns:
        The runs moved, oldest first.

    Raises:
        InputError: the two roots are the same, or one lies inside the other; a run named in
            ``selection`` is not under ``log_root``.
        StorageError: a root cannot be listed, or a file cannot be copied or deleted (what
            was moved stays moved; run it again to finish).
    """
    archive_root = archive_root or archive_root_for(log_root)
    a, b = log_root.rstrip("/") + "/", archive_root.rstrip("/") + "/"
    if a.startswith(b) or b.startswith(a):
        raise InputError(f"archive root {archive_root}: use a root outside {log_root} (and not "
                         f"around it), e.g. {archive_root_for(log_root)}")
    runs = list_runs(log_root)
    missing = sorted(set(selection.runs) - {f"{r['experiment']}/{r['run']}" for r in runs})
    if missing:
        raise InputError(f"--run {', '.join(missing)}: no such run under {log_root} (tbpipe runs "
                         f"--log-root {log_root} lists them)")
    chosen = select_runs(runs, selection)
    moved = []
    for run in reversed(chosen):
        source = storage.join(log_root, run["experiment"], run["run"])
        target = storage.join(archive_root, run["experiment"], run["run"])
        files = storage.list_files(source) if storage.exists(source) else []
        if not dry_run:
            move_run(source, target, files)
        moved.append(ArchivedRun(run["experiment"], run["run"], len(files)))
    return moved


def _marker_order(name: str) -> tuple[int, str]:
    """Other files first, then ``_run.json``, then ``_summary.json`` (the run's own markers)."""
    return ({RUN_MARKER: 1, SUMMARY_FILE: 2}.get(name, 0), name)


def move_run(source: str, target: str, files: Sequence[str]) -> None:
    """Move the run folder ``source`` (holding ``files``, relative) to ``target``."""
    local = not storage.is_remote(source) and not storage.is_remote(target)
    if local and not os.path.exists(storage.to_local_path(target)):
        os.makedirs(os.path.dirname(storage.to_local_path(target)), exist_ok=True)
        with contextlib.suppress(OSError):  # another file system: file by file below
            os.rename(storage.to_local_path(source), storage.to_local_path(target))
            return
    for name in sorted(files, key=_marker_order):
        _move_file(storage.join(source, name), storage.join(target, name))
    if not storage.is_remote(source):
        shutil.rmtree(storage.to_local_path(source), ignore_errors=True)  # empty folders left


def _move_file(source: str, target: str) -> None:
    """Copy one file whole (through a local temporary file: bounded memory), then delete it."""
    if storage.is_remote(source):
        with tempfile.TemporaryDirectory(prefix="tbpipe-archive-") as tmp:
            local = os.path.join(tmp, "file")
            storage.download_file(source, local)
            storage.upload_file(local, target)
    else:
        storage.upload_file(storage.to_local_path(source), target)
    storage.delete_file(source)
