"""Processes end with their run: ``tbpipe run`` killed at any moment leaves nothing behind.

Each test starts ``tbpipe run`` in a session of its own, waits for a moment that matters (the
warm worker still importing TensorFlow; a step running in a child forked from it), kills the
run (SIGTERM, SIGKILL), and then scans ``/proc`` for any process of that session: none may
remain after a few seconds. Before this, a run SIGKILLed while the warm worker imported left
it alive for good (about 700 MB, parent init).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import TBPIPE
from tests.reliability.support import REPO, frame, write_table

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]

#: How long what a run started may outlive it (the steps get SIGTERM, then SIGKILL at 10 s).
GONE_WITHIN_S = 15.0


def session_processes(sid: int) -> dict[int, tuple[int, str]]:
    """Processes of the session ``sid`` (zombies aside): pid -> (parent pid, command line)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            found[int(entry)] = (int(fields[1]), command.strip())
    return found


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             proc: subprocess.Popen) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert proc.poll() is None, f"the run ended before {what}: {proc.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def zygote(sid: int) -> int | None:
    return next((pid for pid, (_, cmd) in session_processes(sid).items()
                 if "runners.warm_worker" in cmd), None)


def forked_step(sid: int) -> int | None:
    """A step running in a child forked from the warm worker (its parent is the zygote)."""
    processes = session_processes(sid)
    parents = {pid for pid, (_, cmd) in processes.items() if "runners.warm_worker" in cmd}
    return next((pid for pid, (ppid, _) in processes.items() if ppid in parents), None)


def start_run(tmp_path: Path) -> subprocess.Popen:
    """``tbpipe run`` for long enough to be killed in it (a tiny table, many epochs)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    data = write_table(tmp_path / "data.csv", frame(n=60))
    return subprocess.Popen(
        [*TBPIPE, "run", "--data", data, "--epochs", "100000", "--finetune", "never",
         "--run-name", "killed",
         "--log-root", str(tmp_path / "logs"), "--pipeline-root", str(tmp_path / "kfp")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)


def assert_nothing_left(proc: subprocess.Popen) -> None:
    sid = proc.pid
    deadline = time.monotonic() + GONE_WITHIN_S
    while session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_processes(sid)
    for pid in left:  # do not leave them to the rest of the suite
        with __import__("contextlib").suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"still running {GONE_WITHIN_S:.0f} s after the run ended: {left}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_run_killed_while_the_worker_starts_leaves_no_process(tmp_path, sig):
    proc = start_run(tmp_path)
    try:
        wait_for(lambda: zygote(proc.pid), 60, "the warm worker to start", proc)
        os.kill(proc.pid, sig)  # TensorFlow is still being imported: it takes seconds
        _, stderr = proc.communicate(timeout=30)
    finally:
        assert_nothing_left(proc)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, stderr[-2000:]
        assert stderr.strip().splitlines()[-1].startswith("tbpipe run: stopped by SIGTERM; ")
    else:
        assert proc.returncode == -signal.SIGKILL


# SIGKILL mid-step passes too (the zygote's and the step's parent-death signals); it is left
# out of the suite for time: add signal.SIGKILL here to run it (about 30 s).
@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_a_run_killed_mid_step_ends_the_worker_and_the_step(tmp_path, sig):
    proc = start_run(tmp_path)
    try:
        wait_for(lambda: forked_step(proc.pid), 180, "a step forked from the worker", proc)
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        assert_nothing_left(proc)
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, stderr[-2000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("tbpipe run: stopped by SIGTERM; ") and "Traceback" not in stderr
        assert "full log: " in last
