"""The only module that touches kfp's private names and unpublished behaviour.

tbpipe leans on kfp in four places where kfp publishes no API. Each is used only with the
kfp releases it was checked against (:data:`CHECKED_KFP`, compared as parsed versions);
with any other kfp every function here takes a public path instead, which works but loses
what is said below, so a newer kfp degrades rather than breaks:

* **Loop fields** (:func:`loop_field`): a ``dsl.ParallelFor`` over dict items gives every
  field the type of the item's first value (kfp 2.17, ``for_loop._get_first_element_type``);
  tbpipe marks each field ``String`` (the ``channel_type`` of kfp's loop variable), the type
  kfp passes to a parameter of any type. Fallback: the field as kfp types it (kfp has no
  public way to type it or to relax its check); a sweep whose item values are not all of
  the first value's type then fails kfp's type check when it compiles: every sweep with a
  numeric axis (the item's ``trial`` name is a str), only ``model``/``precision`` sweeps
  compile.
* **The REST client** (:func:`open_client`): kfp.Client passes no request timeout and
  retries its health check 5 times, 5 s apart. tbpipe bounds every request of the one REST
  client kfp.Client's APIs share (reached through ``kfp.Client._healthz_api``) and makes the
  health check one try. Fallback: a plain ``kfp.Client``, each call of it under a deadline
  (:func:`request_deadline`: a ``SIGALRM`` timer) instead of a timeout per request; lost:
  the bound where the caller is not the main thread, per-request timeouts (the deadline is
  the call's whole budget, retries included) and the single health-check try (a server
  answering errors is retried by kfp.Client until the deadline, then reported as silent).
* **kfp.local's log wording** (:func:`local_task_event`): ``Executing task 'x'`` and
  ``Task 'x' finished with status SUCCESS`` mark when a step starts and ends for
  ``tbpipe run``'s display. Fallback: none of kfp.local's lines are read; the display
  follows tbpipe's own progress markers (a step starts at its first marker and ends at its
  result), so a step's time leaves out its start-up, and a step that fails before its first
  marker is reported as the pipeline failing, without the step's last lines.
* **The local subprocess runner** (:func:`local_subprocess`, :func:`replace_local_subprocess`,
  :func:`run_executor`): the warm worker replaces
  ``kfp.local.subprocess_task_handler.run_local_subprocess``, the one function that starts
  a step's process, and runs ``kfp.dsl.executor_main``'s entry point in a forked child.
  Fallback: the runner is left alone and every step is a fresh Python (about 5 s more per
  TensorFlow step); the executor runs as ``python -m kfp.dsl.executor_main`` would
  (``runpy``).

Like ``components/common/tensorboard/fastpath.py`` for tensorboardX; a test holds that no
other module names a kfp private attribute.
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import threading
from collections.abc import Callable, Iterator

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

#: The kfp releases whose internals this module was checked against (the tests run it).
CHECKED_KFP = SpecifierSet(">=2.14,<2.18")
EXECUTOR_MODULE = "kfp.dsl.executor_main"
#: What kfp's generated step command sets before it runs the executor
#: (``_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main``): kfp then skips its
#: compile-time imports. A process that runs the executor itself sets it too.
EXECUTOR_ENV = {"_KFP_RUNTIME": "true"}
#: kfp.local's log lines (ANSI colours removed) where a task starts, and where it ends
#: (group 2: the status); on a checked kfp only (:func:`local_task_event`).
LOCAL_TASK_STARTED = re.compile(r"Executing task '([^']+)'")
LOCAL_TASK_ENDED = re.compile(r"Task '([^']+)' finished with status (\w+)")


def kfp_version() -> str:
    """The installed kfp's version."""
    import kfp

    return kfp.__version__


@functools.cache
def _parse(version: str) -> Version | None:
    try:
        return Version(version)
    except InvalidVersion:
        return None


def kfp_checked(version: str | None = None) -> bool:
    """Whether kfp ``version`` (default: the installed one) is one this module was checked with.

    Versions are compared parsed (``2.17.3``, ``2.17.3.post1`` in; ``2.18.0``, ``2.170``,
    ``2.18.0rc1`` and unparsable ones out), never as string prefixes.
    """
    parsed = _parse(kfp_version() if version is None else version)
    return parsed is not None and CHECKED_KFP.contains(parsed)


# ------------------------------------------------------------------ loop fields

def loop_field(item, name: str):  # noqa: ANN001, ANN201 - a kfp LoopArgumentVariable
    """The field ``name`` of a ``dsl.ParallelFor``'s dict item, to pass to a step of any type.

    On a checked kfp the field is marked ``String``, kfp's type for a loop item of unknown
    type, which passes to a parameter of any type; the step's config checks the value when it
    runs. Otherwise the field as kfp types it (see the module doc).
    """
    field = getattr(item, name)
    if kfp_checked():
        field.channel_type = "String"
    return field


# ------------------------------------------------------------------ the REST client

def bound_requests(api_client: object, timeout: float, retries: int) -> None:
    """Give every request of a kfp_server_api ApiClient a timeout and bounded retries.

    kfp.Client's calls pass no ``_request_timeout``, and an explicit None in urllib3 means
    "wait forever", so the default goes on the one REST client all its APIs share: each
    request waits at most ``timeout`` seconds (connecting, and each wait for bytes) and
    failed connections are retried at most ``retries`` times, reads never. Idempotent: a
    client already bound keeps its bound.
    """
    import urllib3

    rest = api_client.rest_client
    if getattr(rest, "tbpipe_timeout", None) is not None:
        return
    request = rest.request

    def bounded(*args: object, _request_timeout: object = None, **kwargs: object) -> object:
        return request(*args, _request_timeout=_request_timeout or (timeout, timeout), **kwargs)

    rest.request = bounded
    rest.tbpipe_timeout = timeout  # our own mark
    rest.pool_manager.connection_pool_kw["retries"] = urllib3.Retry(
        total=retries, connect=retries, read=0, status=0, other=0, redirect=retries,
        backoff_factor=0.2, raise_on_status=False)
    rest.pool_manager.clear()


def open_client(timeout: float, retries: int, **kwargs: object) -> object:
    """A ``kfp.Client(**kwargs)`` whose requests are bounded (see the module doc).

    On a checked kfp every request waits at most ``timeout`` seconds and is retried at most
    ``retries`` times (connections only), and the health check kfp.Client makes when it
    starts is one try. Otherwise a plain kfp.Client: make it, and call it, inside
    :func:`request_deadline`.
    """
    import kfp

    if not kfp_checked():
        return kfp.Client(**kwargs)

    class _Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration: int = 5) -> object:
            # One try: kfp.Client retries 5 times, 5 s apart; errors are reported instead.
            # kfp.Client calls this from __init__, the first moment its API client exists.
            bound_requests(self._healthz_api.api_client, timeout, retries)
            return self._healthz_api.healthz_service_get_healthz()

    client = _Client(**kwargs)
    bound_requests(client._healthz_api.api_client, timeout, retries)
    return client


class NoAnswer(Exception):  # not an OSError: urllib3 would retry those
    """A kfp.Client call did not end within :func:`request_deadline`'s seconds."""


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """On an unchecked kfp, :class:`NoAnswer` when the block runs longer than ``seconds``.

    A no-op on a checked kfp (its REST client is bound by :func:`open_client`), and outside
    the main thread (where no signal handler can be set).
    """
    if kfp_checked() or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise NoAnswer(f"no answer within {seconds:g}s")

    before = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


# ------------------------------------------------------------------ kfp.local's log wording

def local_task_event(line: str) -> tuple[str, str] | None:
    """``("started" | "succeeded", task)`` when ``line`` is kfp.local's log line saying so.

    ``None`` for any other line, and for every line on an unchecked kfp (whose wording may
    differ: the caller follows its steps' own markers instead).
    """
    if not kfp_checked():
        return None
    if started := LOCAL_TASK_STARTED.search(line):
        return "started", started[1]
    if (ended := LOCAL_TASK_ENDED.search(line)) and ended[2] == "SUCCESS":
        return "succeeded", ended[1]
    return None


def reads_local_log() -> bool:
    """Whether :func:`local_task_event` reads kfp.local's lines (a checked kfp)."""
    return kfp_checked()


# ------------------------------------------------------------------ the local subprocess runner

def local_subprocess() -> Callable[..., int] | None:
    """kfp.local's function that runs a step's command as a subprocess, to call or replace.

    ``plain(full_command=..., env_vars=...)`` returns the exit code. ``None`` on an unchecked
    kfp or one without that function (the runner is then left alone).
    """
    if not kfp_checked():
        return None
    from kfp.local import subprocess_task_handler as handler

    return getattr(handler, "run_local_subprocess", None)


def replace_local_subprocess(plain: Callable[..., int],
                             replacement: Callable[..., int]) -> Callable[[], None]:
    """Let kfp.local start each step's process with ``replacement``; the function that undoes it.

    ``plain`` is what :func:`local_subprocess` returned (put back by the undo).
    """
    from kfp.local import subprocess_task_handler as handler

    handler.run_local_subprocess = replacement

    def undo() -> None:
        handler.run_local_subprocess = plain

    return undo


def run_executor(program: str, args: list[str]) -> None:
    """Run the KFP executor on the component file ``program`` in this process.

    As ``python -m kfp.dsl.executor_main --component_module_path PROGRAM ARGS`` would,
    ``SystemExit`` included; on an unchecked kfp through ``runpy`` (the module's own
    ``__main__``).
    """
    import sys

    if kfp_checked():
        from kfp.dsl import executor_main

        sys.argv = [executor_main.__file__, "--component_module_path", program, *args]
        executor_main.executor_main()
        return
    import runpy

    sys.argv = [EXECUTOR_MODULE, "--component_module_path", program, *args]
    runpy.run_module(EXECUTOR_MODULE, run_name="__main__", alter_sys=True)
