"""The one check every path that enters tbpipe passes before it is opened, and bounded reads.

A FIFO with no writer blocks ``open`` forever, a character device (``/dev/zero``) never
ends and a socket cannot be opened as a file: :func:`check_regular` refuses them from
``os.stat``, which opens nothing. :func:`read_bounded` reads a small file (a params file, a
metadata file) only after that check, and never more than its bound.
"""

from __future__ import annotations

import os
import stat

from tbpipe.components.common.errors import InputError


def _kind(mode: int) -> str:
    return ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def check_regular(name: str, path: str, folder_ok: bool = True) -> os.stat_result:
    """Refuse anything but a regular file (or a folder, if ``folder_ok``) before reading it.

    Args:
        name: The input as the user named it (a flag and its value), for the error line.
        path: The local path (symlinks are followed: a link to a FIFO is a FIFO).
        folder_ok: Whether a folder is a valid answer.

    Returns:
        The path's ``os.stat`` result.

    Raises:
        InputError: one line naming the input: missing, a FIFO, a device, a socket, or a
            folder where a file is expected.

    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); check the path") from exc
    if stat.S_ISREG(info.st_mode) or (folder_ok and stat.S_ISDIR(info.st_mode)):
        return info
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{name}: is a folder, not a file; pass a file")
    read = "files and folders are" if folder_ok else "a file is"
    raise InputError(f"{name}: is {_kind(info.st_mode)}, not a regular file; only {read} "
                     "read (a pipe or a device can block or never end), copy the data to a "
                     "file first")


def read_bounded(name: str, path: str, limit: int, what: str) -> bytes:
    """The bytes of a local regular file of at most ``limit`` bytes; InputError otherwise.

    The size is checked from ``os.stat`` before reading, and at most ``limit + 1`` bytes are
    read (a file growing meanwhile, or one whose size ``stat`` does not tell, is held too).
    The file is opened without blocking and checked again from its open descriptor, so a
    path swapped for a FIFO between the check and the open is refused, not waited on.
    ``what`` says what the file should be, for the error line.
    """
    info = check_regular(name, path, folder_ok=False)
    if info.st_size > limit:
        raise too_big(name, str(info.st_size), limit, what)
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            opened = os.fstat(handle.fileno())
            if not stat.S_ISREG(opened.st_mode):
                raise InputError(f"{name}: is {_kind(opened.st_mode)} now, not a regular file "
                                 "(it changed while being read); copy the data to a file first")
            os.set_blocking(handle.fileno(), True)
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror}); check the path") from exc
    if len(data) > limit:
        raise too_big(name, f"over {limit}", limit, what)
    return data


def too_big(name: str, size: str, limit: int, what: str) -> InputError:
    """The one line for a file of ``size`` bytes past the ``limit`` a ``what`` may have."""
    return InputError(f"{name}: {size} bytes, more than the {limit} a {what} may have; "
                      "check that it is the right file")
