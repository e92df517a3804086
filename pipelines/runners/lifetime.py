"""Processes that end with their run: what ties a local run's helpers to ``tbpipe run``.

``tbpipe run`` starts helpers: the warm worker (about 700 MB, :mod:`.warm_worker`), the steps
it forks, and steps kfp.local starts as plain subprocesses. Each must end when the run ends,
however it ends: a normal exit, SIGTERM, Ctrl-C, a crash, or the run's process SIGKILLed, in
its first seconds as well as later. Three mechanisms, from the operating system:

- **Parent-death signal** (Linux): :func:`die_with_parent` sets ``PR_SET_PDEATHSIG`` through
  ``prctl`` in the helper itself, then checks that its parent is still the one expected (a
  parent that died before the call would otherwise be missed: the helper's parent is then
  init or a subreaper).
- **A process group** per helper: the warm worker and the steps it forks share one, and a
  plain step gets its own under :func:`main` (a small supervisor); :func:`end_process_group`
  ends a group, SIGTERM first (steps close their event files), SIGKILL after a grace period.
- **A lifeline pipe** (portable fallback): the run keeps the write end, the helper watches
  the read end (:func:`watch_lifeline`); end of file means the run is gone.

Standard library only, so that the supervisor starts in milliseconds::

    python lifetime.py PARENT_PID -- COMMAND...     # run COMMAND, ended with PARENT_PID
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: How long a group's processes get after SIGTERM before SIGKILL.
GRACE_S = 10.0


def die_with_parent(expected_parent: int, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent ends; whether it could.

    Right after setting it, checks that the parent is still ``expected_parent``: if it
    already ended, this process gets ``sig`` now. Linux only (``prctl`` via ctypes); False
    elsewhere or when the call fails, and the caller relies on :func:`watch_lifeline`.
    """
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes
        import ctypes.util

        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    if os.getppid() != expected_parent:  # it ended before the call, or while we started
        os.kill(os.getpid(), sig)
        time.sleep(1.0)  # a handled signal: leave all the same
        os._exit(128 + int(sig))
    return armed


def watch_lifeline(fd: int, when_gone: Callable[[], None]) -> threading.Thread:
    """Call ``when_gone`` (in a daemon thread) once the pipe's read end ``fd`` reads end of file.

    The run holds the only write end: end of file means it has ended, however it ended.
    """
    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 64):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        when_gone()

    thread = threading.Thread(target=watch, name="tbpipe-lifeline", daemon=True)
    thread.start()
    return thread


def end_self(sig: int = signal.SIGTERM, grace_s: float = GRACE_S) -> None:
    """Send ``sig`` to this process's group; leave after ``grace_s`` if still here."""
    with contextlib.suppress(OSError):
        os.killpg(os.getpgid(0), sig)
    time.sleep(grace_s)
    os._exit(128 + int(sig))


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` is still there (zombies aside)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_process_group(pgid: int, grace_s: float = GRACE_S,
                      leader: subprocess.Popen | None = None) -> None:
    """End every process of the group ``pgid``: SIGTERM, then SIGKILL after ``grace_s``.

    ``leader``: the group's leader, when it is this process's child (it is reaped here).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if leader is not None:
            leader.poll()  # a zombie leader keeps the group "alive"
        if not group_alive(pgid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=5)


def supervised(command: Sequence[str]) -> list[str]:
    """``command`` run under :func:`main`: it ends with this process, even SIGKILLed."""
    return [sys.executable, os.path.abspath(__file__), str(os.getpid()), "--", *command]


def run_supervised(full_command: list[str], env_vars: dict | None = None) -> int:
    """Run a step's command as kfp.local's subprocess runner does, ended with this process.

    The same contract as kfp.local's own subprocess runner (``kfp_compat.local_subprocess``): the
    step's output printed line by line to ``sys.stdout``, then a blank line; its exit code.
    The command runs under :func:`main` (:func:`supervised`). When this process stops
    waiting (SIGTERM, Ctrl-C, an error) the step is ended before the exception goes on:
    kfp's own runner would wait for the step to finish.
    """
    env = {**os.environ, **env_vars} if env_vars else None
    process = subprocess.Popen(supervised(full_command), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
    try:
        for line in iter(process.stdout.readline, ""):
            print(line, end="")
        print("\n")
        return process.wait()
    except BaseException:
        end_supervisor(process)
        raise
    finally:
        process.stdout.close()


def end_supervisor(process: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """End a :func:`main` supervisor and its command: SIGTERM, SIGKILL after ``grace_s``."""
    with contextlib.suppress(OSError):
        process.terminate()  # it passes SIGTERM to the command's group
    try:
        process.wait(timeout=grace_s + 2.0)  # it SIGKILLs the group after its own grace
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: Sequence[str]) -> int:
    """Run ``COMMAND`` in its own process group; end the group when the parent ends.

    ``argv``: ``PARENT_PID -- COMMAND...``. The parent's death (SIGTERM by
    ``PR_SET_PDEATHSIG``) and SIGTERM/SIGINT/SIGHUP are passed to the group; the exit
    status is the command's (128 + N for a signal N).
    """
    parent, dashes, *command = argv
    if dashes != "--" or not command:
        print("usage: lifetime.py PARENT_PID -- COMMAND...", file=sys.stderr)
        return 2
    started: list[subprocess.Popen] = []
    pending: list[int] = []  # a signal that came before the command started
    ending = threading.Event()

    def forward(signum: int, frame: object) -> None:
        if not started:
            pending.append(signum)
            return
        child = started[0]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signum)
        if signum != signal.SIGINT and not ending.is_set():
            ending.set()  # the run is going: SIGKILL what is left after the grace period
            threading.Thread(target=end_process_group, args=(child.pid, GRACE_S, None),
                             daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)  # before anything starts: no window without them
    die_with_parent(int(parent), signal.SIGTERM)
    if pending:
        return 128 + pending[0]
    child = subprocess.Popen(command, process_group=0)
    started.append(child)
    if pending:  # between the start and the line above
        forward(pending[0], None)
    code = child.wait()
    if ending.is_set() or group_alive(child.pid):  # what the command left behind
        end_process_group(child.pid, GRACE_S if ending.is_set() else 1.0)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
