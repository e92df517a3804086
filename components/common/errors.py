"""User-facing errors: each becomes one clear line and a non-zero exit."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator


class TbpipeError(Exception):
    """An error the user can act on; its message names the input and what to do."""


class InputError(TbpipeError):
    """Bad data or bad parameters given to a step."""


class SettingError(InputError):
    """A setting outside what it may be: names the setting, its value and the rule.

    The line reads ``epochs=0: must be a positive integer``; the CLI names its flag instead
    (``--finetune-epochs=0: ...``), from the same three parts.
    """

    def __init__(self, name: str, value: object, rule: str) -> None:
        self.name, self.value, self.rule = name, value, rule
        super().__init__(f"{name}={value!r}: {rule}")


class StorageError(TbpipeError):
    """A storage location that cannot be read or written."""

    @classmethod
    def from_os_error(cls, path: str, exc: OSError, action: str = "cannot write") -> StorageError:
        """The one line for an OSError met on ``path``: the path, the cause, what to do.

        ``{path}: cannot write (No space left on device); free space on that disk or write
        elsewhere``. The cause is the system's own words (``exc.strerror``).
        """
        cause = exc.strerror or str(exc) or type(exc).__name__
        hint = _OS_HINTS.get(exc.errno or 0, "check the path and try again")
        return cls(f"{path}: {action} ({cause}); {hint}")


_FULL = "free space on that disk or write elsewhere"
_NOT_A_FOLDER = "a file is where a folder should be; remove it or choose another path"
_DENIED = "check its permissions or write elsewhere"
_OS_HINTS = {
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EFBIG: "the file is too large for that file system; write elsewhere",
    errno.EROFS: "that file system is read-only; write to a writable folder",
    errno.EACCES: _DENIED,
    errno.EPERM: _DENIED,
    errno.ENOTDIR: _NOT_A_FOLDER,
    errno.EEXIST: _NOT_A_FOLDER,  # mkdir(exist_ok=True) on a file
    errno.EISDIR: "a folder is where a file should be; remove it or choose another path",
    errno.ENOENT: "its folder does not exist; create it or fix the path",
    errno.EIO: "the disk reported an I/O error; check it or write elsewhere",
}


@contextlib.contextmanager
def os_errors(path: str, action: str = "cannot write") -> Iterator[None]:
    """Turn an OSError raised in the block into :meth:`StorageError.from_os_error` for ``path``.

    Wrap only the writes (or reads) of ``path``, so another file's error is never blamed on it.
    """
    try:
        yield
    except OSError as exc:
        raise StorageError.from_os_error(path, exc, action) from exc


class StorageUnavailable(StorageError):  # noqa: N818 - reads as a state, like the GCS error
    """Storage could not be reached in time (transient errors outlasted the retry deadline)."""


#: Exit status of a step or command that failed (any error; ``tbpipe`` documents the others).
EXIT_ERROR = 1
_LINE_MAX = 300


def _first_line(text: str) -> str:
    line = (text.strip().splitlines() or [""])[0].strip()
    return line if len(line) <= _LINE_MAX else line[:_LINE_MAX] + "..."


def temporary_folder() -> str:
    """The folder temporary files go to: ``TMPDIR`` (``TEMP``, ``TMP``), else the system's.

    The variable as set, even when that folder is full: ``tempfile.gettempdir`` would pass
    over a folder it cannot write a file in, and name another.
    """
    import tempfile

    for name in ("TMPDIR", "TEMP", "TMP"):
        if os.environ.get(name):
            return os.environ[name]
    return tempfile.gettempdir()


def full_folder_line(exc: OSError, folders: dict[str, str]) -> str:
    """The one line for a full disk (ENOSPC, EDQUOT): which folder is full, and what to do.

    ``folders``: what the user knows a folder as (``the temporary folder (TMPDIR)``) to its
    path. The folder is the one holding ``exc.filename`` (the deepest), else the one of
    ``folders`` with the least room left (a write on an open file names no file).
    """
    import shutil

    named = os.path.abspath(str(exc.filename)) if exc.filename else ""
    holding = [(len(path), label, path) for label, path in folders.items()
               if path and named and (named == path or named.startswith(path.rstrip(os.sep)
                                                                          + os.sep))]
    if holding:
        _, label, path = max(holding)
    else:
        room = []
        for label, path in folders.items():
            with contextlib.suppress(OSError):
                room.append((shutil.disk_usage(path).free, label, path))
        if not room:
            where = f"{named}: " if named else ""
            return (f"{where}no space left on device; free space on that disk or write "
                    "elsewhere")
        _, label, path = min(room)
    what = f" (writing {named})" if named and named != path else ""
    return f"{path}: {label} is full{what}: no space left on device; {_full_advice(label)}"


def _full_advice(label: str) -> str:
    return ("free space there or set TMPDIR to a folder with room"
            if label.startswith("the temporary folder") else
            "free space there or choose another folder")


def error_line(exc: BaseException, folders: dict[str, str] | None = None) -> str:
    """One line for any exception: what failed, on which input, and what to do if known.

    A :class:`TbpipeError` is its message. An ``OSError`` names its file and the system's
    words (a full disk: :func:`full_folder_line`, among ``folders`` and the temporary
    folder). Anything else: ``Type: first line of its message``.
    """
    if isinstance(exc, TbpipeError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        known = {"the temporary folder (TMPDIR)": temporary_folder(), **(folders or {})}
        return full_folder_line(exc, {label: os.path.abspath(path)
                                      for label, path in known.items() if path})
    if isinstance(exc, OSError) and exc.filename:
        cause = exc.strerror or _first_line(str(exc)) or type(exc).__name__
        hint = _OS_HINTS.get(exc.errno or 0, "check the path and try again")
        return f"{exc.filename}: {cause}; {hint}"
    message = _first_line(str(exc))
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def report_uncaught(step: str, exc: BaseException, when: str = "") -> None:
    """Print ``exc``'s traceback, then its one line ``tbpipe: <step>: error: ...``, to stderr.

    The traceback goes first so that the last line is the one a person (and ``tbpipe run``)
    reads; the run's log keeps both. ``when``: what was being done, for an error raised
    outside tbpipe's own code (``kfp could not record the step's outputs``).
    """
    import sys
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    line = error_line(exc)
    if when:
        line = f"{when} ({line})"
    print(f"tbpipe: {step}: error: {line}; its traceback is in the step's log",
          file=sys.stderr, flush=True)


_traceback_logs: list[str] = []  # where this process's tracebacks go (the run's log)


def log_tracebacks_to(path: str) -> None:
    """Send the tracebacks :func:`write_traceback` writes from now on to ``path`` (appended)."""
    _traceback_logs.append(path)


def traceback_log() -> str | None:
    """The log file given last to :func:`log_tracebacks_to`, if any."""
    return _traceback_logs[-1] if _traceback_logs else None


def write_traceback(exc: BaseException, name: str) -> str | None:
    """Write ``exc``'s traceback to a log file; its path, or None if nothing could be written.

    The file is the one given to :func:`log_tracebacks_to` (``tbpipe run``'s run log), else
    a new ``tbpipe-errors/{name}-{time}-{pid}.log`` in the temporary folder.
    """
    import time
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    candidates = list(reversed(_traceback_logs))
    folder = os.path.join(temporary_folder(), "tbpipe-errors")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidates.append(os.path.join(folder, f"{name}-{stamp}-{os.getpid()}.log"))
    for path in candidates:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "a", encoding="utf-8") as log:
                log.write(f"\ntbpipe {name}: unexpected error\n{text}")
        except OSError:
            continue
        return path
    return None


def full_folders(folders: dict[str, str], min_free: int = 1 << 20) -> list[str]:
    """Lines for the ``folders`` (label to path) with less than ``min_free`` bytes free.

    For a failure that said nothing of its cause (a step that could not even start: kfp's
    shell writes the step's program to the temporary folder first).
    """
    import shutil

    lines = []
    for label, path in folders.items():
        probe = path
        while probe and not os.path.exists(probe):
            probe = os.path.dirname(probe)
        with contextlib.suppress(OSError):
            if probe and shutil.disk_usage(probe).free < min_free:
                lines.append(f"{path}: {label} is full: no space left on device; "
                             f"{_full_advice(label)}")
    return lines


class exit_on_error:  # noqa: N801 - used as a context manager, reads like a statement
    """In a step's wrapper: turn any error into one stderr line and exit status 1.

    A :class:`TbpipeError` is its one line. Any other exception prints its traceback, then
    one line naming the cause (:func:`report_uncaught`); so does one raised after the block,
    by kfp's executor recording the step's outputs (its metrics, its return values): the
    block installs a ``sys.excepthook`` for that. Without it the KFP executor ends with a
    traceback; users need the one line that names the input and what to do.
    """

    def __init__(self, step: str) -> None:
        self.step = step

    def __enter__(self) -> None:
        import sys

        step = self.step

        def after_the_step(exc_type, exc, tb) -> None:  # noqa: ANN001
            if not issubclass(exc_type, Exception):
                sys.__excepthook__(exc_type, exc, tb)
                return
            report_uncaught(step, exc, "kfp could not record the step's outputs")

        sys.excepthook = after_the_step
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # noqa: ANN001
        import sys

        if exc is None or not isinstance(exc, Exception):
            return False
        if isinstance(exc, TbpipeError):
            print(f"tbpipe: {self.step}: error: {exc}", file=sys.stderr, flush=True)
        else:
            report_uncaught(self.step, exc)
        raise SystemExit(EXIT_ERROR) from None
