"""The one owner of SIGTERM handling in tbpipe's steps.

A preempted node, a cancelled run or ``docker stop`` sends SIGTERM. Two things react to it:
the fit loop stops at a batch boundary so a retry resumes from a checkpoint
(:mod:`tbpipe.components.training.preemption`), and a ``gs://`` TensorBoard writer publishes
what it holds on the way out (:mod:`tbpipe.components.common.tensorboard.sink`). Both register
an action here; the innermost block's action is the one that runs. One handler is installed
for the outermost block and the one before it is back in place afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

_actions: list[Callable[[], None]] = []
_earlier: object = None  # the handler in place before the outermost block


def _handle(signum: int, frame: object) -> None:
    if _actions:
        _actions[-1]()


@contextlib.contextmanager
def on_sigterm(action: Callable[[], None]) -> Iterator[bool]:
    """While the block runs, SIGTERM calls ``action`` (only the innermost block's).

    Yields whether the handler is installed: Python installs handlers in the main thread
    only, so elsewhere nothing happens and SIGTERM keeps its earlier meaning.
    """
    global _earlier
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    outermost = not _actions
    if outermost:
        _earlier = signal.signal(signal.SIGTERM, _handle)
    _actions.append(action)
    try:
        yield True
    finally:
        _actions.pop()
        if outermost:  # None: a handler not set from Python; the default is the closest
            signal.signal(signal.SIGTERM, signal.SIG_DFL if _earlier is None else _earlier)
            _earlier = None


def earlier_handler() -> object:
    """The SIGTERM handler that was in place before tbpipe's (a callable, SIG_DFL or SIG_IGN)."""
    return signal.SIG_DFL if _earlier is None else _earlier


class Terminated(BaseException):  # noqa: N818 - reads as what happened, like KeyboardInterrupt
    """SIGTERM reached a command that stops on it (:func:`sigterm_raises`).

    A ``BaseException``, as ``KeyboardInterrupt``: ``except Exception`` blocks let it pass,
    ``finally`` blocks and context managers run on the way out.
    """


#: Exit status of a command stopped by SIGTERM (128 + 15, as the shell reports it).
EXIT_TERMINATED = 128 + signal.SIGTERM


def _raise_terminated() -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_raises() -> Iterator[bool]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread.

    For the ``tbpipe`` commands: the block unwinds (helpers are stopped, files closed) and
    the command says so in one line. An inner :func:`on_sigterm` block takes precedence.
    """
    with on_sigterm(_raise_terminated) as installed:
        yield installed
