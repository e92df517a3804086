"""Never save a broken model: non-finite losses or weights end the fit with one line.

:class:`StopOnNonFinite` is Keras' ``TerminateOnNaN`` made loud: the first batch whose loss is
NaN or infinite raises :class:`Diverged` at once (``TerminateOnNaN`` only sets
``stop_training``, so the epoch would still end, be checkpointed and the fit return as a
success); at each epoch's end it also checks the epoch's metrics and the weights, before any
later callback checkpoints them (put it before the checkpoint callback).
:func:`check_finite_model` checks a model after the fit, before it is saved, and wherever a
model is taken as good (promotion).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np

from tbpipe.components.common.errors import TbpipeError

_HINT = ("nothing was saved; lower the learning rate, or check the data and the model "
         "(a loss or layer that can overflow)")


class Diverged(TbpipeError):
    """The fit produced a non-finite loss, metric or weight: the model is broken."""


def non_finite_weights(model: keras.Model) -> list[str]:
    """Paths of the model's variables holding a NaN or an infinity (empty: all finite)."""
    bad = []
    for variable in model.weights:
        values = np.asarray(keras.ops.convert_to_numpy(variable.value))
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad.append(str(variable.path))
    return bad


def check_finite_model(model: keras.Model, what: str) -> None:
    """Raise :class:`Diverged` naming ``what`` and the first bad variables unless all are finite."""
    bad = non_finite_weights(model)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise Diverged(f"{what}: the weights hold NaN or infinite values ({shown}); the model "
                       f"is broken: {_HINT}")


def check_finite_fit(model: keras.Model, metrics: Mapping[str, float]) -> None:
    """After a fit, before the save: Diverged unless its final metrics and weights are finite."""
    bad = non_finite_logs(metrics)
    if bad:
        named = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
        raise Diverged(f"training diverged: {named}; {_HINT}")
    check_finite_model(model, "the trained model")


def non_finite_logs(logs: Mapping[str, object] | None) -> dict[str, float]:
    """The entries of Keras logs that are numbers but not finite."""
    bad = {}
    for key, value in (logs or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(number):
            bad[key] = number
    return bad


class StopOnNonFinite(keras.callbacks.Callback):
    """Raise :class:`Diverged` at the first non-finite loss (batch) or metric/weight (epoch).

    The step's wrapper prefixes the step's name to the line. ``async_safe`` like tbpipe's
    other callbacks: it keeps no state between batches but the epoch number; on a backend
    that runs batch hooks on callback threads, Keras re-raises the error when it collects
    them, at the latest at the epoch's end, before any checkpoint.
    """

    async_safe = True

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, object] | None = None) -> None:
        """Remember the epoch, for the line."""
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, object] | None = None) -> None:
        """Diverged at the first non-finite (running) loss."""
        bad = non_finite_logs({"loss": (logs or {}).get("loss", 0.0)})
        if bad:
            raise Diverged(f"training diverged: the loss became {bad['loss']} in "
                           f"epoch {self.epoch + 1}, batch {batch + 1}; {_HINT}")

    def on_epoch_end(self, epoch: int, logs: Mapping[str, object] | None = None) -> None:
        """Diverged unless the epoch's metrics and the weights are finite (before a checkpoint)."""
        bad = non_finite_logs(logs)
        if bad:
            named = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            raise Diverged(f"training diverged: {named} after epoch {epoch + 1}; "
                           f"{_HINT}")
        check_finite_model(self.model, f"after epoch {epoch + 1}")
