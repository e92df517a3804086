"""The supervisor a plain step runs under: its command's whole process group ends with the run."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tbpipe.pipelines.runners import lifetime

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG and /proc are Linux's")

# A stand-in for tbpipe run: it starts a supervised command that starts a grandchild (kfp's
# `sh -ec` runs the executor as its child), prints their ids, and waits to be killed.
# The module is loaded from its file: it needs nothing but the standard library.
LOAD = f"""
import importlib.util
spec = importlib.util.spec_from_file_location("lifetime", {lifetime.__file__!r})
lifetime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lifetime)
"""
RUN = LOAD + """
import subprocess, sys, time
supervised = lifetime.supervised
command = ["sh", "-c", "sleep 300 & echo $$ $!; wait"]
proc = subprocess.Popen(supervised(command), stdout=subprocess.PIPE, text=True)
print(proc.pid, proc.stdout.readline().strip(), flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_supervised_command_and_its_children_end_with_the_parent(sig):
    parent = subprocess.Popen([sys.executable, "-c", RUN], stdout=subprocess.PIPE, text=True)
    pids = [int(word) for word in parent.stdout.readline().split()]
    assert len(pids) == 3 and all(alive(pid) for pid in pids)  # supervisor, sh, sleep
    parent.send_signal(sig)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in pids if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "the supervised command outlived its parent"


def test_the_supervisor_passes_the_exit_status_and_leaves_nothing():
    assert subprocess.run(lifetime.supervised(["sh", "-c", "exit 7"])).returncode == 7
    assert subprocess.run(lifetime.supervised(["sh", "-c", "kill -TERM $$"])).returncode == 143


def test_die_with_parent_checks_the_parent_it_expected():
    code = LOAD + "import os; lifetime.die_with_parent(os.getppid() + 1, 15); print('no')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGTERM and "no" not in proc.stdout
