"""Stop training on SIGTERM at a batch boundary, so a preempted step can resume.

``sigterm_flag`` installs the handler; ``StopOnSignal`` stops the fit and raises
:class:`Preempted` (one line: what happened and where a retry resumes from). The handler sets
``model.stop_training`` itself, so no batch-end hook is needed (``async_safe``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import keras

from tbpipe.components.common.errors import TbpipeError
from tbpipe.components.common.sigterm import on_sigterm


class Preempted(TbpipeError):
    """Training stopped on SIGTERM; the last epoch's checkpoint lets a retry resume."""


class StopFlag(threading.Event):
    """Set by SIGTERM (:func:`sigterm_flag`); setting it also stops the watched model.

    ``model.stop_training`` makes Keras end the epoch once the running batch is done.
    """

    def __init__(self) -> None:
        super().__init__()
        self.model: keras.Model | None = None

    def set(self) -> None:
        """Set the flag and ask the watched model, if any, to stop training."""
        super().set()
        if self.model is not None:
            self.model.stop_training = True


class StopOnSignal(keras.callbacks.Callback):
    """Stops training at the next batch boundary once ``flag`` is set (by SIGTERM).

    The flag sets ``model.stop_training`` itself, so this has no batch-end hook and is
    ``async_safe``. An interrupted epoch is validated on one batch only, then Preempted is
    raised from ``on_epoch_end``: after Keras has waited for every batch hook (what they logged
    is written when the writer closes) and before any later callback logs or checkpoints the
    partial epoch (so put this first). A complete epoch (SIGTERM in its last batch or its
    validation) is logged and checkpointed, and Preempted is raised when fit ends, unless that
    was the last epoch.

    Args:
        flag: The StopFlag from :func:`sigterm_flag` (a plain Event is only checked between
            epochs).
        checkpoint_dir: Where the checkpoints go (named in the error), None if nowhere.

    """

    async_safe = True

    def __init__(self, flag: threading.Event, checkpoint_dir: str | None) -> None:
        super().__init__()
        self.flag = flag
        self.checkpoint_dir = checkpoint_dir
        self._last_begun = -1  # the last batch begun in this epoch (the first of its call)
        self._epochs_ended = 0

    def _preempted(self) -> Preempted:
        if self.checkpoint_dir:
            return Preempted("training stopped by SIGTERM; a retry resumes from the last "
                             f"epoch's checkpoint in {self.checkpoint_dir}")
        return Preempted("training stopped by SIGTERM; without a checkpoint dir a retry "
                         "starts over")

    def _epoch_complete(self) -> bool:
        steps = (self.params or {}).get("steps")
        per_call = getattr(self.model, "steps_per_execution", 1) or 1
        return steps is not None and self._last_begun + per_call >= steps

    def on_train_begin(self, logs=None) -> None:  # noqa: D102
        if isinstance(self.flag, StopFlag):
            self.flag.model = self.model
        if self.flag.is_set():
            raise self._preempted()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:  # noqa: D102
        if self.flag.is_set():  # set since the last epoch's end (or a plain Event)
            raise self._preempted()
        self._last_begun = -1

    def on_train_batch_begin(self, batch: int, logs=None) -> None:  # noqa: D102
        self._last_begun = batch  # begin hooks run on the training loop, in order

    def on_test_begin(self, logs=None) -> None:  # noqa: D102
        if self.flag.is_set() and not self._epoch_complete():
            self.model.stop_evaluating = True  # its metrics are never used

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: D102
        if self.flag.is_set() and not self._epoch_complete():
            raise self._preempted()
        self._epochs_ended = epoch + 1

    def on_train_end(self, logs=None) -> None:  # noqa: D102
        if isinstance(self.flag, StopFlag):
            self.flag.model = None
        if self.flag.is_set() and self._epochs_ended < (self.params or {}).get("epochs", 0):
            raise self._preempted()


@contextlib.contextmanager
def sigterm_flag() -> Iterator[StopFlag]:
    """Yield a StopFlag set when SIGTERM arrives (:mod:`tbpipe.components.common.sigterm`).

    Outside the main thread (where Python cannot install handlers) the flag never fires.
    """
    flag = StopFlag()
    with on_sigterm(flag.set):
        yield flag
