"""The Keras layer of tbpipe's logging: a callback that writes through a tensorboardX writer.

Imported only inside TensorFlow steps. The callback does no tensor work on the hot path:
per-batch values come from Keras' ``logs`` (already Python floats) and go, as plain numbers,
into one queued event per batch (not one per metric) that the writer thread encodes
(:func:`~tbpipe.components.common.tensorboard.fastpath.add_scalars`); docs/performance.md
says what it costs.
"""

from __future__ import annotations

import threading

import keras
import numpy as np

from tbpipe.components.common.tensorboard.fastpath import add_histogram, add_scalars


class TensorBoardX(keras.callbacks.Callback):
    """Logs loss/metrics per batch and per epoch, learning rate, and weight histograms.

    Tags: ``batch/<metric>`` (global step = batch number across epochs),
    ``epoch/<metric>`` and ``epoch/val_<metric>`` (step = epoch number, 1-based),
    ``epoch/learning_rate``, and ``weights/<layer>/<variable>`` histograms.

    With ``global_steps=True`` every tag shares one step axis, the global batch number:
    epoch tags and histograms are logged at the step of the epoch's last batch. A resumed
    run then needs one ``purge_step`` (``initial_step + 1``) for all its tags.

    It is ``async_safe`` (steps come from the batch index, and batches that end out of order
    are logged in order): Keras' JAX backend runs its batch hooks on callback threads, off the
    training loop (on an H200, marking it not async-safe cost 18-59 %); with TensorFlow, Keras
    runs every batch hook on the training loop (``backend.IS_THREAD_SAFE`` is False), about
    20 us per batch there (docs/performance.md).

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

    async_safe = True

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
        self._epoch_start = self._step  # global batches done before this epoch
        self._lock = threading.Lock()
        self._waiting: dict[int, dict | None] = {}  # batch -> logs, until earlier ones are out
        self._next = 0  # the next batch to log

    def on_epoch_begin(self, epoch: int, logs=None) -> None:  # noqa: D102
        self._epoch, self._epoch_start, self._next = epoch, self._step, 0

    def on_train_batch_end(self, batch: int, logs=None) -> None:  # noqa: D102
        with self._lock:
            self._step = max(self._step, self._epoch_start + batch + 1)
            if not self.batch_every or batch % self.batch_every:
                return
            if batch == self._next and not self._waiting:  # in order: the usual case
                self._next = batch + self.batch_every
                self._log_batch(batch, logs)
            else:
                self._waiting[batch] = logs
                self._log_batches()

    def _log_batches(self, everything: bool = False) -> None:
        """Log the waiting batches in order, up to the first one still running (or all)."""
        while self._waiting and (everything or self._next in self._waiting):
            batch = self._next if self._next in self._waiting else min(self._waiting)
            self._next = batch + self.batch_every
            self._log_batch(batch, self._waiting.pop(batch))

    def _log_batch(self, batch: int, logs: dict | None) -> None:
        if logs:
            step = (self._epoch_start + batch + 1 if self.global_steps
                    else self._epoch * self.steps_per_epoch + batch + 1)
            add_scalars(self.writer, logs, step, prefix="batch/")

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: D102
        with self._lock:  # Keras has waited for every batch hook of the epoch
            self._log_batches(everything=True)
        step = self._step if self.global_steps else epoch + 1
        values = {f"epoch/{name}": value for name, value in (logs or {}).items()
                  if name != "learning_rate"}
        values["epoch/learning_rate"] = current_learning_rate(self.model)
        add_scalars(self.writer, values, step)
        if self.histogram_every and (epoch + 1) % self.histogram_every == 0:
            log_weight_histograms(self.writer, self.model, step)


def current_learning_rate(model: keras.Model) -> float:
    """Return the optimizer's learning rate now (schedules included)."""
    return float(np.asarray(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))


def log_weight_histograms(writer, model: keras.Model, step: int) -> None:
    """One histogram per trainable variable, tagged ``weights/<layer>/<variable>``.

    Tags come from layer and variable names, which a model loaded from a checkpoint keeps
    (its variables' paths lose the model's name), so a resumed run continues the same tags.
    Only the weights are copied here; they are binned on the writer thread.
    """
    for layer in model.layers:
        for variable in layer.trainable_weights:
            values = keras.ops.convert_to_numpy(variable)
            add_histogram(writer, f"weights/{layer.name}/{variable.name}", values, step)


class BatchProfiler(keras.callbacks.Callback):
    """Profiles global batches ``first`` to ``last`` with the TensorFlow profiler.

    The profile goes to ``{profile_dir}/plugins/profile/<time>/<host>.xplane.pb``, what
    TensorBoard's Profile tab (``tensorboard-plugin-profile``) reads. ``profile_dir`` is the
    step writer's own folder (``writer.logdir``): the log dir itself, or on an object store
    the writer's local staging folder, whose other files the writer uploads to the log dir
    when it closes (:mod:`tbpipe.components.common.tensorboard.sink`).

    Batches are numbered as TensorBoardX numbers them: globally, from 1, across epochs; a
    resumed fit (``initial_step`` batches done) profiles what is left of the range. The
    profiler stops after batch ``last``, or when the fit ends first. A range the fit never
    reaches writes nothing and says so in one line.

    Args:
        profile_dir: The folder the profile goes under.
        first: The first global batch to profile (1-based).
        last: The last global batch to profile.
        initial_step: Batches done before this fit (on resume).

    """

    def __init__(self, profile_dir: str, first: int, last: int, initial_step: int = 0) -> None:
        super().__init__()
        _profiler()  # another backend: said before the fit starts, not at batch ``first``
        self.profile_dir, self.first, self.last = profile_dir, first, last
        self._step = initial_step  # the global number of the last batch begun
        self.profiling = False
        self.profiled: list[int] = []  # the global batches profiled

    def on_train_batch_begin(self, batch: int, logs=None) -> None:  # noqa: D102
        self._step += 1
        if not self.profiling and self.first <= self._step <= self.last:
            _profiler().start(self.profile_dir)
            self.profiling = True

    def on_train_batch_end(self, batch: int, logs=None) -> None:  # noqa: D102
        if self.profiling:
            self.profiled.append(self._step)
            if self._step >= self.last:
                self._stop()

    def on_train_end(self, logs=None) -> None:  # noqa: D102
        self._stop()
        if not self.profiled and self._step < self.first:
            print(f"tbpipe: --profile-batch {self.first},{self.last}: the fit ended at global "
                  f"batch {self._step}, before batch {self.first}; no profile was written "
                  "(choose batches the fit reaches)", flush=True)

    def _stop(self) -> None:
        if self.profiling:
            self.profiling = False
            _profiler().stop()
            print(f"profile of batches {self.profiled[0]}-{self.profiled[-1]} written to the "
                  "step's log dir (plugins/profile: TensorBoard's Profile tab)", flush=True)


def _profiler():  # noqa: ANN202 - TensorFlow's profiler module
    """``tf.profiler.experimental`` (start/stop); InputError on another Keras backend."""
    from tbpipe.components.common.errors import InputError

    if keras.backend.backend() != "tensorflow":
        raise InputError(f"--profile-batch: profiles come from TensorFlow's profiler, but "
                         f"Keras runs on {keras.backend.backend()}; unset KERAS_BACKEND or "
                         "leave --profile-batch empty")
    import tensorflow as tf

    return tf.profiler.experimental
