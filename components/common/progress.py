"""A step's progress as marker lines on its standard output, for the process that runs it.

kfp.local runs each step as a subprocess and relays its output line by line; ``tbpipe run``
reads these lines back (:mod:`tbpipe.pipelines.runners.run_display`) to show one line per
step, a progress bar and the figure that matters, and sends everything else to a log file.
On a cluster the lines are just part of the step's log. One line is::

    tbpipe-progress: {"step": "train", "event": "epoch", "epoch": 1, "epochs": 10, ...}

Events: ``batch`` (``batch``, ``batches``, ``epoch``, ``epochs``), ``epoch`` (``epoch``,
``epochs`` and the epoch's metrics), ``result`` (``figure``: the step's one line of result,
e.g. ``val_accuracy 0.9312``), ``label`` (``label``: the name to show for the step, e.g.
``train trial-01``).
"""

from __future__ import annotations

import json
import sys
import time

MARKER = "tbpipe-progress: "
#: The least time between two ``batch`` events of one step (a bar needs no more).
BATCH_INTERVAL_S = 0.5


def report(step: str, event: str, **fields: object) -> None:
    """Print one progress marker line for ``step`` (flushed at once)."""
    line = json.dumps({"step": step, "event": event, **fields}, separators=(",", ":"))
    sys.stdout.write(MARKER + line + "\n")
    sys.stdout.flush()


def report_result(step: str, figure: str) -> None:
    """Report the step's one figure that matters (shown on its closing line)."""
    report(step, "result", figure=figure)


def parse(line: str) -> dict | None:
    """The event a marker line holds (anywhere in ``line``), else None."""
    at = line.find(MARKER)
    if at < 0:
        return None
    try:
        event = json.loads(line[at + len(MARKER):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "step" in event and "event" in event else None


class BatchThrottle:
    """Says whether a ``batch`` event is due: the first, the last, then one per interval."""

    def __init__(self, interval_s: float = BATCH_INTERVAL_S) -> None:
        self.interval_s, self._last = interval_s, float("-inf")

    def due(self, last_batch: bool = False) -> bool:
        """True when an event should go out now (and counts it as sent)."""
        now = time.monotonic()
        if last_batch or now - self._last >= self.interval_s:
            self._last = now
            return True
        return False


def keras_progress_callback(step: str, epochs: int, batches: int):  # noqa: ANN201
    """A Keras callback that reports batches and epochs of ``step`` (imports keras)."""
    import keras

    class ProgressReport(keras.callbacks.Callback):
        """Reports ``batch`` (throttled) and ``epoch`` events through :func:`report`."""

        async_safe = True

        def __init__(self) -> None:
            super().__init__()
            self._epoch, self._throttle = 0, BatchThrottle()

        def on_epoch_begin(self, epoch: int, logs=None) -> None:  # noqa: ANN001, D102
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs=None) -> None:  # noqa: ANN001, D102
            if self._throttle.due(last_batch=batch + 1 >= batches):
                report(step, "batch", batch=batch + 1, batches=batches, epoch=self._epoch,
                       epochs=epochs)

        def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: ANN001, D102
            values = {k: round(float(v), 4) for k, v in (logs or {}).items()
                      if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
            report(step, "epoch", epoch=epoch + 1, epochs=epochs, **values)

    return ProgressReport()
