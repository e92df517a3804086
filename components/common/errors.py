"""User-facing errors: each becomes one clear line and a non-zero exit."""

from __future__ import annotations

import contextlib
import errno
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


class exit_on_error:  # noqa: N801 - used as a context manager, reads like a statement
    """In a step's wrapper: turn a TbpipeError into one stderr line and exit status 1.

    Without it the KFP executor prints a traceback; users need the one line that names the
    input and what to do.
    """

    def __init__(self, step: str) -> None:
        self.step = step

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:  # noqa: ANN001
        if exc is not None and isinstance(exc, TbpipeError):
            import sys

            print(f"tbpipe: {self.step}: error: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        return False
