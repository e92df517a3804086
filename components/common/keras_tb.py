"""The Keras layer of tbpipe's logging: a callback that writes through a tensorboardX writer.

Imported only inside TensorFlow steps. The callback does no tensor work on the hot path:
per-batch values come from Keras' ``logs`` (already Python floats) and tensorboardX queues
the event for its writer thread.
"""

from __future__ import annotations

import keras
import numpy as np


class TensorBoardX(keras.callbacks.Callback):
    """Logs loss/metrics per batch and per epoch, learning rate, and weight histograms.

    Tags: ``batch/<metric>`` (global step = batch number across epochs),
    ``epoch/<metric>`` and ``epoch/val_<metric>`` (step = epoch number, 1-based),
    ``epoch/learning_rate``, and ``weights/<layer>/<variable>`` histograms.

    With ``global_steps=True`` every tag shares one step axis, the global batch number:
    epoch tags and histograms are logged at the step of the epoch's last batch. A resumed
    run then needs one ``purge_step`` (``initial_step + 1``) for all its tags.

    Args:
        writer: A tensorboardX ``SummaryWriter``.
        batch_every: Log per-batch scalars every this many batches (0 turns them off).
        histogram_every: Log weight histograms every this many epochs (0 turns them off).
        initial_epoch: Epochs already done (on resume), so steps continue where they stopped.
        steps_per_epoch: Batches per epoch, to number batches globally across epochs.
        global_steps: Log epoch tags at the global batch step instead of the epoch number.
        initial_step: Batches done before (on resume); default
            ``initial_epoch * steps_per_epoch``.

    """

    def __init__(self, writer, batch_every: int = 1, histogram_every: int = 1,
                 initial_epoch: int = 0, steps_per_epoch: int = 0,
                 global_steps: bool = False, initial_step: int | None = None) -> None:
        super().__init__()
        self.writer = writer
        self.batch_every = batch_every
        self.histogram_every = histogram_every
        self.steps_per_epoch = steps_per_epoch
        self.global_steps = global_steps
        self._epoch = initial_epoch
        self._step = initial_epoch * steps_per_epoch if initial_step is None else initial_step

    def on_epoch_begin(self, epoch: int, logs=None) -> None:  # noqa: D102
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs=None) -> None:  # noqa: D102
        self._step += 1
        if not self.batch_every or batch % self.batch_every or not logs:
            return
        step = self._step if self.global_steps else self._epoch * self.steps_per_epoch + batch + 1
        for name, value in logs.items():
            self.writer.add_scalar(f"batch/{name}", float(value), step)

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: D102
        step = self._step if self.global_steps else epoch + 1
        for name, value in (logs or {}).items():
            if name != "learning_rate":
                self.writer.add_scalar(f"epoch/{name}", float(value), step)
        self.writer.add_scalar("epoch/learning_rate", current_learning_rate(self.model), step)
        if self.histogram_every and (epoch + 1) % self.histogram_every == 0:
            log_weight_histograms(self.writer, self.model, step)


def current_learning_rate(model: keras.Model) -> float:
    """Return the optimizer's learning rate now (schedules included)."""
    return float(np.asarray(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))


def log_weight_histograms(writer, model: keras.Model, step: int) -> None:
    """One histogram per trainable variable, tagged ``weights/<layer>/<variable>``.

    Tags come from layer and variable names, which a model loaded from a checkpoint keeps
    (its variables' paths lose the model's name), so a resumed run continues the same tags.
    """
    for layer in model.layers:
        for variable in layer.trainable_weights:
            values = keras.ops.convert_to_numpy(variable)
            writer.add_histogram(f"weights/{layer.name}/{variable.name}", values, step)
