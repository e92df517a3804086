"""A warm worker for the local subprocess runner: TensorFlow imported once, a fork per step.

Each TensorFlow step run by kfp.local's subprocess runner pays for a fresh Python that imports
TensorFlow and Keras (about 5 s), the KFP executor and TensorFlow's teardown at exit. The
warm worker is a process (the *zygote*) that the local runner starts once: it imports
TensorFlow, Keras, the KFP executor and tbpipe's step modules, and nothing more (TensorFlow
starts no thread pool before its first op; :func:`tensorflow_threads` checks), then forks one
child per step. The child runs the step's own command, the KFP executor
(``kfp.dsl.executor_main``) on the component's source and arguments, with the step's
environment, working folder, standard input and output, and its exit code goes back to the
runner. Once the executor has written the step's outputs (and the step closed its event
files), the child leaves with ``os._exit``, skipping TensorFlow's teardown.

Only the local subprocess runner uses it; on a cluster every step is the same KFP component
run in its own container. :func:`install` hooks the runner's one function that starts a
step's process (a kfp internal, replaced through :mod:`tbpipe.pipelines.kfp_compat` for the
kfp versions it was checked with). A step whose command is not a
lightweight Python component, a kfp of another version, or a worker that did not start runs
as a plain subprocess, as without the worker.

    python -m tbpipe.pipelines.runners.warm_worker SOCKET PARENT_PID LIFELINE_FD  # the zygote

The zygote and its steps end with the runner however it ends (:func:`bind_zygote`,
:func:`end_zygote`, :mod:`tbpipe.pipelines.runners.lifetime`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from tbpipe.components.registry import steps
from tbpipe.pipelines.kfp_compat import (
    EXECUTOR_ENV,
    EXECUTOR_MODULE,
    kfp_checked,
    local_subprocess,
    replace_local_subprocess,
    run_executor,
)

START_TIMEOUT_S = 120.0  # the most the first step waits for the zygote's imports
_PROGRAM = '"$program_path/ephemeral_component.py"'
# Steps whose source names these wait for the worker to be ready (they import TensorFlow);
# other steps run as plain subprocesses while it is still importing, alongside it.
WAIT_FOR = ("tbpipe.components.training", "tbpipe.components.evaluation",
            "tbpipe.components.finetuning")
_HEADER = struct.Struct("!Q")
_CODE = struct.Struct("!i")
#: What the worker imports before it forks: each step's declared preload (its step.py).
PRELOAD = (*dict.fromkeys(module for step in steps() for module in step.preload),
           "tensorboardX", EXECUTOR_MODULE)


def step_program(full_command: Sequence[str]) -> tuple[str, list[str]] | None:
    """The component source and executor arguments of a lightweight Python step's command.

    kfp builds ``sh -ec SCRIPT SOURCE --executor_input ... --function_to_execute NAME``, where
    the script writes SOURCE to ``ephemeral_component.py`` and runs the executor on it.
    Anything else (a container component, a pip install first) is ``None``: not for the
    worker.
    """
    command = list(full_command)
    if len(command) < 4 or command[0] != "sh" or not command[1].startswith("-"):
        return None
    script = command[2]
    if EXECUTOR_MODULE not in script or _PROGRAM not in script or "pip" in script:
        return None
    return command[3], command[4:]


def tensorflow_threads() -> list[str]:
    """Names of this process's threads that TensorFlow started (``tf_*``); empty after import."""
    names = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as comm:
            names.append(comm.read().strip())
    return [name for name in names if name.startswith("tf_")]


# ---------------------------------------------------------------- the zygote (its own process)

def serve(socket_path: str, parent: int | None = None) -> int:
    """Import TensorFlow and the steps' modules, then fork a child for each step requested.

    ``parent``: the runner's process id; the worker leaves once its parent is another.
    """
    import importlib

    from tbpipe.components.common.keras_import import import_keras

    import_keras()
    for module in PRELOAD:
        importlib.import_module(module)
    started = tensorflow_threads()
    if started:  # forking would copy thread pools without their threads
        print(f"warm worker: TensorFlow started threads at import ({started}); not serving",
              file=sys.stderr, flush=True)
        return 2
    parent = os.getppid() if parent is None else parent
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C ends the steps; the runner ends this
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(socket_path + ".tmp")
    os.rename(socket_path + ".tmp", socket_path)  # connectable once it has this name
    server.listen(8)
    server.settimeout(1.0)
    while os.getppid() == parent:  # the runner is gone: so is the worker
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        try:
            request, fds = _receive(conn)
        except (OSError, ValueError):
            conn.close()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        zygote = os.getpid()
        if os.fork() == 0:
            server.close()
            bind_step_to_zygote(zygote)
            _run_step(conn, request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        conn.close()
    return 0


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if len(header) != _HEADER.size or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("incomplete request")
    (size,) = _HEADER.unpack(header)
    payload = bytearray()
    while len(payload) < size:
        chunk = conn.recv(min(1 << 20, size - len(payload)))
        if not chunk:
            raise ValueError("incomplete request")
        payload += chunk
    return json.loads(payload), fds


def _run_step(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the step's process, run the KFP executor, report, leave."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.update(EXECUTOR_ENV)
        code = _execute(request["source"], request["args"])
    except BaseException as exc:  # noqa: BLE001 - e.g. no room for the program (TMPDIR full)
        _could_not_start(request, exc)
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            conn.sendall(_CODE.pack(code))
        os._exit(code)


def _execute(source: str, args: list[str]) -> int:
    """Run the KFP executor on ``source`` as ``python -m kfp.dsl.executor_main`` would."""
    with tempfile.TemporaryDirectory(prefix="tbpipe-step-") as program_dir:
        program = os.path.join(program_dir, "ephemeral_component.py")
        with open(program, "w", encoding="utf-8") as out:
            out.write(source)
        try:
            run_executor(program, args)
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                return int(exc.code or 0)
            print(exc.code, file=sys.stderr)
            return 1
        except BaseException:  # noqa: BLE001 - what python would print, then exit status 1
            sys.excepthook(*sys.exc_info())  # a step's own hook (exit_on_error) included
            return 1
    return 0


# --------------------------------------------- process lifetime (tbpipe.pipelines.runners.lifetime)

#: The lifeline's read end in the zygote and its steps (-1: none); see :func:`bind_zygote`.
_lifeline = -1


def bind_zygote(parent: int, lifeline: int) -> None:
    """In the zygote, first thing: end with ``parent`` (the runner), however it ends.

    SIGKILL by the kernel when the runner ends (Linux), and, everywhere, the lifeline pipe:
    end of file sends SIGTERM to the zygote's process group (its steps stop at a batch).
    """
    from tbpipe.pipelines.runners.lifetime import die_with_parent, end_self, watch_lifeline

    global _lifeline
    die_with_parent(parent, signal.SIGKILL)
    if lifeline >= 0:
        _lifeline = lifeline
        watch_lifeline(lifeline, end_self)


def bind_step_to_zygote(zygote: int) -> None:
    """In a forked step, first thing: SIGTERM when the zygote ends; watch the lifeline too."""
    from tbpipe.pipelines.runners.lifetime import die_with_parent, end_self, watch_lifeline

    die_with_parent(zygote, signal.SIGTERM)
    if _lifeline >= 0:
        watch_lifeline(_lifeline, end_self)


def start_zygote(socket_path: str, log: object) -> tuple[subprocess.Popen, int]:
    """Start the zygote in its own process group, tied to this process; it and the lifeline.

    The lifeline is the write end of a pipe whose read end only the zygote holds: closing
    it (or this process ending) tells the zygote to go.
    """
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, socket_path, str(os.getpid()), str(read_end)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            process_group=0, pass_fds=(read_end,))
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return process, write_end


def end_zygote(process: subprocess.Popen, lifeline: int) -> None:
    """End the zygote and every step it forked (its process group), then close the lifeline."""
    from tbpipe.pipelines.runners.lifetime import end_process_group

    end_process_group(process.pid, leader=process)
    with contextlib.suppress(OSError):
        os.close(lifeline)


def _could_not_start(request: dict, exc: BaseException) -> None:
    """The one line of a step the worker could not start (its traceback first)."""
    from tbpipe.components.common.errors import report_uncaught

    args = list(request.get("args", []))
    name = args[args.index("--function_to_execute") + 1] \
        if "--function_to_execute" in args[:-1] else "step"
    with contextlib.suppress(Exception):
        report_uncaught(name, exc, "the warm worker could not start the step")


# ------------------------------------------------------------------ the runner's side

class WarmWorker:
    """The zygote process as the local runner sees it: start, run a step, stop."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="tbpipe-worker-")
        self.socket_path = os.path.join(self._dir, "worker.sock")
        self.log_path = os.path.join(self._dir, "worker.log")
        with open(self.log_path, "wb") as log:
            self.process, self._lifeline = start_zygote(self.socket_path, log)
        self.failed = False

    def ready(self, timeout_s: float = START_TIMEOUT_S) -> bool:
        """Wait (at most ``timeout_s``) until the zygote serves; False if it cannot."""
        deadline = time.monotonic() + timeout_s
        while not self.failed:
            if os.path.exists(self.socket_path):
                return True
            if self.process.poll() is not None:
                self.failed = True
                break
            if time.monotonic() >= deadline:
                self.failed = timeout_s > 0  # only a wait that ran out gives up on it
                break
            time.sleep(0.05)
        return False

    def run(self, source: str, args: list[str], env: dict[str, str],
            echo: Callable[[str], None]) -> int:
        """Run one step in a forked child; pass each output line to ``echo``; its exit code.

        Raises:
            OSError: the zygote could not be reached (nothing of the step ran).

        """
        request = json.dumps({"source": source, "args": args, "env": env,
                              "cwd": os.getcwd()}).encode()
        read_end, write_end = os.pipe()
        stdin = 0 if _usable(0) else os.open(os.devnull, os.O_RDONLY)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            try:
                conn.connect(self.socket_path)
                socket.send_fds(conn, [_HEADER.pack(len(request))], [stdin, write_end, write_end])
                conn.sendall(request)
            except OSError:
                os.close(read_end)
                self.failed = True
                raise
            finally:
                os.close(write_end)
                if stdin:
                    os.close(stdin)
            with open(read_end, encoding="utf-8", errors="replace", newline=None) as lines:
                for line in iter(lines.readline, ""):
                    echo(line)
            reply = conn.recv(_CODE.size, socket.MSG_WAITALL)
        return _CODE.unpack(reply)[0] if len(reply) == _CODE.size else 1

    def stop(self) -> None:
        """End the zygote (steps it forked have ended with their run) and remove its folder."""
        end_zygote(self.process, self._lifeline)
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)


def _usable(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def install(worker: WarmWorker) -> Callable[[], None] | None:
    """Run the local subprocess runner's steps in ``worker``; the function that undoes it.

    ``None`` (nothing changed: steps run as plain subprocesses) when the installed kfp was
    not checked with this module or does not have the function it replaces.
    """
    plain = local_subprocess()
    if plain is None:
        return None
    from tbpipe.pipelines.runners.lifetime import run_supervised as started  # ends with us

    def run_step(full_command: list[str], env_vars: dict | None = None) -> int:
        program = step_program(full_command)
        wait = program is not None and any(name in program[0] for name in WAIT_FOR)
        if program is None or not worker.ready(START_TIMEOUT_S if wait else 0.0):
            return started(full_command=full_command, env_vars=env_vars)
        try:
            code = worker.run(*program, env={**os.environ, **(env_vars or {})},
                              echo=lambda line: print(line, end=""))
        except OSError:  # the worker is gone: this step and the next run as before
            return started(full_command=full_command, env_vars=env_vars)
        print("\n")  # as kfp's runner ends a step's output
        return code

    return replace_local_subprocess(plain, run_step)


_active: list[Callable[[], None]] = []  # how to stop the worker this process started


def start_warm_worker() -> WarmWorker | None:
    """Start a warm worker for the local subprocess runner's steps, stopped at exit.

    A worker started before by this process is stopped first. ``None`` (steps run as plain
    subprocesses) when the installed kfp was not checked with this module.
    """
    import atexit

    stop_warm_worker()
    if not kfp_checked():
        return None
    try:
        worker = WarmWorker()
    except OSError:
        return None
    undo = install(worker)
    if undo is None:
        worker.stop()
        return None

    def stop() -> None:
        undo()
        worker.stop()

    _active.append(stop)
    atexit.register(stop_warm_worker)
    return worker


def stop_warm_worker() -> None:
    """Stop the warm worker this process started (if any); steps run as plain subprocesses."""
    while _active:
        _active.pop()()


if __name__ == "__main__":
    if len(sys.argv) > 3:  # started by start_zygote
        bind_zygote(int(sys.argv[2]), int(sys.argv[3]))
    raise SystemExit(serve(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None))
