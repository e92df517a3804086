"""The two arms of benchmarks 1 and 2: a bare ``model.fit`` and the train step's fit loop.

Both train the seed CNN on the same generated 28x28 data (in memory for the bare loop, as
Dataset folders for the step) and time every epoch with :func:`epoch_clock`.
"""

from __future__ import annotations

import contextlib
import io
import os
import time

from benchmarks.common import (
    CLASSES,
    IMAGE_SIDE,
    median,
    mnist_like,
    ratio,
    write_records,
)

SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 1)


def epoch_clock():  # noqa: ANN201 - a keras Callback made after TensorFlow is imported
    """A callback recording each epoch's wall and CPU seconds (validation included)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self._wall, self._cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            self.wall.append(time.perf_counter() - self._wall)
            self.cpu.append(time.process_time() - self._cpu)

    return EpochClock()


class Arms:
    """The data and the two arms; each call returns (epoch clock, end-to-end seconds)."""

    def __init__(self, root: str, samples: int, val_samples: int, seed: int = 42) -> None:
        images, labels = mnist_like(samples + val_samples, seed)
        self.train_dir, self.val_dir = os.path.join(root, "train"), os.path.join(root, "val")
        write_records(self.train_dir, images[:samples], labels[:samples])
        write_records(self.val_dir, images[samples:], labels[samples:])
        pixels = images[..., None].astype("float32") / 255.0
        self.x, self.y = pixels[:samples], labels[:samples]
        self.xv, self.yv = pixels[samples:], labels[samples:]
        self.root, self.seed, self.runs = root, seed, 0

    def bare(self, batch_size: int, epochs: int, samples: int | None = None,
             **compile_options: object):  # noqa: ANN201
        """``model.fit`` on the arrays (the first ``samples``): build, fit, save."""
        from tbpipe.components.training.model import build_cnn

        started = time.perf_counter()
        model = build_cnn(SHAPE, CLASSES, self.seed, **compile_options)
        clock = epoch_clock()
        model.fit(self.x[:samples], self.y[:samples], batch_size=batch_size, epochs=epochs,
                  verbose=0,
                  validation_data=(self.xv, self.yv), callbacks=[clock])
        self.runs += 1
        model.save(os.path.join(self.root, f"bare-{self.runs}.keras"))
        return clock, time.perf_counter() - started, model

    def step(self, batch_size: int, epochs: int, **settings: object):  # noqa: ANN201
        """The train step's fit loop on the Dataset folders (logging as configured)."""
        from tbpipe.components.training.config import TrainConfig
        from tbpipe.components.training.fit import FitJob, fit_and_save
        from tbpipe.components.training.model import build_cnn

        config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=self.seed, **settings)
        clock = epoch_clock()
        self.runs += 1
        run = os.path.join(self.root, f"step-{self.runs}")

        def build(info, precision):  # noqa: ANN001, ANN202 - what train_model builds
            return build_cnn(info.image_shape, info.num_classes, config.seed,
                             config.learning_rate, precision=precision)

        job = FitJob(self.train_dir, self.val_dir, os.path.join(run, "model"),
                     os.path.join(run, "logs"), build, callbacks=(clock,))
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            fit_and_save(job, config)
        return clock, time.perf_counter() - started, None


def after_first(clocks: list, kind: str = "wall") -> list[float]:
    """Seconds (``wall`` or ``cpu``) of the epochs after the first, every fit together."""
    return [t for clock in clocks for t in getattr(clock, kind)[1:]]


def steady(clocks: list, samples: int) -> tuple[float, float]:
    """Median samples per wall second and per CPU second over the epochs after the first."""
    return (ratio(samples, median(after_first(clocks, "wall"))),
            ratio(samples, median(after_first(clocks, "cpu"))))
