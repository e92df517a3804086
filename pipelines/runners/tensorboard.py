"""``tbpipe tensorboard``: one TensorBoard on a log root (a local folder or any store URI).

Three loaders; ``auto`` picks the fastest one that can read the root:

* ``fast``: TensorBoard's native data server (``--load_fast=true``, Rust: parses in parallel,
  outside Python's GIL). It reads local folders and real GCS (credentials from the
  environment), but not an emulator nor any other store. ``auto``'s choice there.
* ``mirror``: the native data server on a local mirror of the root
  (:mod:`.tensorboard_mirror`): tbpipe lists the root once per reload interval through its
  storage layer (fsspec) and fetches only what changed, many objects at once, so that a run
  that is still writing shows live. ``auto``'s choice for every other store (``s3://``,
  ``az://``, ``gs://`` on an emulator, any scheme fsspec knows) where the data server binary
  is installed: on 500 finished runs it serves every series several times sooner than the
  Python loader (docs/performance.md, section 8b). The mirror is a temporary folder removed
  at exit, or ``mirror_dir`` (``--mirror-dir``), kept for the next start.
* ``python``: TensorBoard's Python loader reading the store itself. It runs without
  TensorFlow, so its file layer (``tensorboard.compat.tensorflow_stub.io.gfile``) reads
  every scheme through fsspec: ``s3://`` with s3fs (the ``AWS_*`` environment; the frontend
  routes it there, past TensorBoard's own boto3 reader, which is the fallback without
  s3fs), ``gs://`` with gcsfs (which honours ``STORAGE_EMULATOR_HOST``), ``az://``/``abfs://``
  with adlfs, and whatever fsspec implementation is installed. No local copy; ``auto``'s
  choice where no data server binary is installed, and the explicit alternative elsewhere.

Every loader runs behind the same frontend, ``tensorboard_frontend.py``: TensorBoard
in a process where TensorFlow is blocked. TensorBoard needs no TensorFlow to serve, and not
importing it makes every start about 4 s sooner (docs/performance.md, section 5).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.storage import exists, is_remote, scheme, to_local_path

if TYPE_CHECKING:
    from tbpipe.pipelines.runners.tensorboard_mirror import Mirror

LOADERS = ("auto", "fast", "mirror", "python")
#: Runs the Python loader reloads at once on an object store (TensorBoard's
#: ``--max_reload_threads``, default 1). Each run's reload is a few requests that wait on the
#: network, so threads overlap them: 1.6-2.2x sooner on 50-500 finished runs with TensorBoard's
#: own S3 reader against a local S3 server on 2 cores, 1.2x at 500 runs with s3fs (where CPU
#: is what is left; docs/performance.md, section 8b). Flags given after ``--`` come later and
#: win.
REMOTE_RELOAD_THREADS = 16


@dataclasses.dataclass(frozen=True)
class LoaderChoice:
    """Which loader runs, and why."""

    name: str
    reason: str


def data_server_available() -> bool:
    """Whether TensorBoard's native data server binary is installed."""
    try:
        from tensorboard_data_server import server_binary
    except ImportError:
        return False
    return server_binary() is not None


def choose_loader(log_root: str, environ: Mapping[str, str] = os.environ,
                  fast_available: bool | None = None) -> LoaderChoice:
    """Pick the fast loader wherever it can read ``log_root``, else the mirror (or python)."""
    fast = data_server_available() if fast_available is None else fast_available
    if not fast:
        return LoaderChoice("python", "no TensorBoard data server binary is installed")
    mirrored = ("a local mirror synced every reload through fsspec, read by the native data "
                "server; --loader python reads the store itself")
    if scheme(log_root) == "gs" and environ.get("STORAGE_EMULATOR_HOST"):
        return LoaderChoice("mirror", "gs:// on an emulator (STORAGE_EMULATOR_HOST), which the "
                                      f"native data server cannot read: {mirrored}")
    if is_remote(log_root) and scheme(log_root) != "gs":
        return LoaderChoice("mirror", f"{scheme(log_root)}:// (the native data server reads "
                                      f"only local folders and gs://): {mirrored}")
    where = "real GCS" if is_remote(log_root) else "a local folder"
    return LoaderChoice("fast", f"native data server (--load_fast=true) on {where}")


def resolve_loader(log_root: str, loader: str, mirror_dir: str | None,
                   environ: Mapping[str, str] = os.environ,
                   fast_available: bool | None = None) -> tuple[LoaderChoice, str | None]:
    """The loader that serves ``log_root``, and the mirror folder it is given.

    ``mirror_dir`` (``--mirror-dir``) is the mirror loader's. With ``auto`` it is used only
    where ``auto`` picks the mirror, and left unused (None) where it picks another loader, so
    one command line serves whatever root it is given (the shared TensorBoard's Deployment
    names the folder for every root: deploy/tensorboard). With ``fast`` or ``python`` it is a
    mistake. An empty ``mirror_dir`` is none (``--mirror-dir=`` clears a folder given earlier
    on the command line).

    Raises:
        InputError: ``mirror_dir`` with an explicit loader other than ``mirror`` (one line).

    """
    if loader == "auto":
        choice = choose_loader(log_root, environ, fast_available)
    else:
        choice = LoaderChoice(loader, "as asked")
    if mirror_dir and choice.name != "mirror":
        if loader != "auto":
            raise InputError(f"--mirror-dir is for the mirror loader; {log_root} is served by "
                             f"the {choice.name} loader")
        return choice, None
    return choice, mirror_dir or None


def tensorboard_command(log_root: str, host: str, port: int, loader: str,
                        reload_interval: float = 5, extra_args: Sequence[str] = (),
                        mirror_dir: str | None = None) -> list[str]:
    """Return the command line of the TensorBoard process for ``loader``.

    Every loader runs behind the TensorFlow-free frontend (``tensorboard_frontend.py``). The
    Python loader on an object store reloads :data:`REMOTE_RELOAD_THREADS` runs at once;
    ``mirror`` is the fast loader on ``mirror_dir`` (the local mirror of ``log_root``);
    ``extra_args`` come last, so a flag there overrides tbpipe's.
    """
    if loader not in ("fast", "mirror", "python"):
        raise InputError(f"loader {loader!r}: use fast, mirror or python (choose_loader "
                         "resolves auto)")
    if loader == "fast" and is_remote(log_root) and scheme(log_root) != "gs":
        raise InputError(f"--loader fast cannot read {log_root}: TensorBoard's data server "
                         "reads local folders and gs:// only; use --loader mirror or python "
                         "(or auto)")
    if loader == "mirror" and not mirror_dir:
        raise InputError("--loader mirror needs the mirror's folder (start_tensorboard makes "
                         "one)")
    load_fast = "false" if loader == "python" else "true"
    if loader == "mirror":
        logdir = str(mirror_dir)
    else:
        logdir = log_root if is_remote(log_root) else to_local_path(log_root)
    threads = ([f"--max_reload_threads={REMOTE_RELOAD_THREADS}"]
               if loader == "python" and is_remote(log_root) else [])
    frontend = os.path.join(os.path.dirname(__file__), "tensorboard_frontend.py")
    return [sys.executable, "-P", frontend, f"--load_fast={load_fast}",  # -P: no script dir
            f"--logdir={logdir}", f"--host={host}", f"--port={port}",
            f"--reload_interval={reload_interval:g}", *threads, *extra_args]


@dataclasses.dataclass
class TensorBoardServer:
    """A running TensorBoard process; ``stop()`` (or leaving the ``with``) ends it."""

    process: subprocess.Popen
    url: str
    loader: LoaderChoice
    mirror: Mirror | None = None  # the ``mirror`` loader's, synced in a thread of ours

    def stop(self, timeout: float = 10) -> int:
        """Terminate TensorBoard, stop the mirror's sync (if any), return TensorBoard's status."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
            return self.process.wait()
        finally:
            if self.mirror is not None:
                self.mirror.stop()

    def __enter__(self) -> TensorBoardServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_tensorboard(log_root: str, host: str = "127.0.0.1", port: int = 6006,
                      loader: str = "auto", reload_interval: float = 5,
                      extra_args: Sequence[str] = (), output=None,  # noqa: ANN001
                      ready_timeout: float = 120,
                      mirror_dir: str | None = None) -> TensorBoardServer:
    """Start TensorBoard on ``log_root`` and return once it answers HTTP.

    With the ``mirror`` loader the root is mirrored once before TensorBoard starts (so its
    first load finds every finished run), then every ``reload_interval`` seconds in a thread
    that :meth:`TensorBoardServer.stop` ends.

    Args:
        log_root: A local folder or a store URI (``gs://``, ``s3://``, ``az://``, any
            scheme fsspec knows).
        host: The address to bind (loopback by default).
        port: The port to serve on.
        loader: ``auto`` (see :func:`choose_loader`), ``fast``, ``mirror`` or ``python``.
        reload_interval: Seconds between reloads of the log root (and syncs of a mirror).
        extra_args: More TensorBoard flags, e.g. ``--samples_per_plugin=scalars=5000``.
        output: Where TensorBoard's own output goes (a file object); None inherits ours.
        ready_timeout: The most seconds to wait for TensorBoard to answer.
        mirror_dir: The ``mirror`` loader's folder, kept afterwards; None: a temporary
            folder removed when TensorBoard stops. Unused where ``auto`` picks another
            loader (:func:`resolve_loader`).

    Raises:
        InputError: a loader or mirror folder that cannot serve ``log_root`` (one line).
        TbpipeError: the root cannot be read (StorageError) or TensorBoard did not start.

    """
    if is_remote(log_root):
        exists(log_root, deadline=30)  # no bucket or no access: fail now (one request or two)
    elif not os.path.isdir(to_local_path(log_root)):
        print(f"note: {log_root} does not exist yet; TensorBoard shows runs once they appear")
    choice, used_dir = resolve_loader(log_root, loader, mirror_dir)
    if mirror_dir and not used_dir:
        print(f"note: --mirror-dir {mirror_dir} is not used: the {choice.name} loader reads "
              f"{log_root} itself")
    mirror_dir = used_dir
    mirror = start_mirror(log_root, mirror_dir, reload_interval) \
        if choice.name == "mirror" else None
    env = tensorboard_env(os.environ)
    try:
        command = tensorboard_command(log_root, host, port, choice.name, reload_interval,
                                      extra_args, mirror.local_dir if mirror else None)
        process = subprocess.Popen(command, env=env, stdout=output, stderr=output,
                                   stdin=subprocess.DEVNULL)
    except BaseException:
        if mirror is not None:
            mirror.stop()
        raise
    server = TensorBoardServer(process, f"http://{host}:{port}/", choice, mirror)
    try:
        wait_until_ready(server, ready_timeout)
    except BaseException:
        server.stop()
        raise
    if mirror is not None:
        mirror.start()
    return server


def start_mirror(log_root: str, mirror_dir: str | None, interval: float) -> Mirror:
    """The mirror of ``log_root``, synced once (its thread not started yet).

    Raises:
        InputError: ``log_root`` is a local folder, or no data server is installed.
        StorageError: the first sync failed (the temporary folder is removed).

    """
    from tbpipe.pipelines.runners.tensorboard_mirror import Mirror

    if not is_remote(log_root):
        raise InputError(f"--loader mirror copies a store; {log_root} is a local folder, which "
                         "the fast loader reads as it is")
    if not data_server_available():
        raise InputError("--loader mirror needs TensorBoard's data server binary (pip install "
                         "tensorboard-data-server); use --loader python")
    mirror = Mirror(log_root, mirror_dir, interval)
    try:
        mirror.first = mirror.sync()
    except BaseException:
        mirror.stop()
        raise
    return mirror


def tensorboard_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The TensorBoard process's environment: ours, quieter, S3's endpoint where it looks.

    TensorBoard's S3 reader takes its endpoint from ``S3_ENDPOINT`` (passed to boto3 as
    ``endpoint_url``); ``AWS_ENDPOINT_URL`` is the standard name, so it fills that in.
    """
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", **environ}
    if env.get("AWS_ENDPOINT_URL") and not env.get("S3_ENDPOINT"):
        env["S3_ENDPOINT"] = env["AWS_ENDPOINT_URL"]
    return env


def wait_until_ready(server: TensorBoardServer, timeout: float) -> None:
    """Poll TensorBoard's ``/data/environment`` until it answers; TbpipeError if it does not.

    A slow answer is an answer: on a loaded machine TensorBoard may take seconds to reply
    while already serving, so each request may take up to 10 s of what is left.
    """
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if server.process.poll() is not None:
            raise TbpipeError(f"TensorBoard exited with status {server.process.returncode} "
                              "before serving (its output says why; is the port in use?)")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(server.url + "data/environment",
                                        timeout=max(0.5, min(10.0, left))) as reply:
                if reply.status == 200:
                    return
        time.sleep(0.25)
    raise TbpipeError(f"TensorBoard did not answer on {server.url} within {timeout:.0f} s")
