"""Benchmark 2, part 3: the step's logging switched on and off epoch by epoch in one fit.

Separate fits differ from each other by ±15 % here (each builds its model, traces its
functions and gets its own thread scheduling), more than the cost being measured. One fit
with tbpipe's ``TensorBoardX`` on ``open_writer`` whose per-batch scalars and weight
histograms are on in some epochs and off in others (ABBA order after a warm-up epoch) compares
epochs of the same model, data and functions. The epoch scalars stay on in both, as in the
step's ``logging off``.
"""

from __future__ import annotations

import argparse
import os

from benchmarks.common import CLASSES, median, median_ratio_interval, progress, ratio
from benchmarks.fit_arms import SHAPE, Arms, epoch_clock
from benchmarks.report import change, change_interval

ABBA = (True, False, False, True)


def toggle_part(arms: Arms, args: argparse.Namespace, root: str) -> dict[str, list[float]]:
    """One fit, logging on/off by epoch; epoch wall and CPU seconds of each kind."""
    import keras

    from tbpipe.components.common.tensorboard.writer import open_writer
    from tbpipe.components.training.model import build_cnn, resolve_precision
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    class Toggle(keras.callbacks.Callback):
        def __init__(self, logger: TensorBoardX) -> None:
            super().__init__()
            self.logger = logger

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            on = epoch > 0 and ABBA[(epoch - 1) % len(ABBA)]
            self.logger.batch_every = self.logger.histogram_every = int(on)

    progress(f"logging: one fit, logging toggled by epoch ({args.toggle_epochs} epochs)")
    model = build_cnn(SHAPE, CLASSES, 42, precision=resolve_precision("auto"))
    clock = epoch_clock()
    with open_writer(os.path.join(root, "toggle")) as writer:
        logger = TensorBoardX(writer, 1, 1)
        model.fit(arms.x, arms.y, batch_size=args.batch_size, epochs=args.toggle_epochs + 1,
                  verbose=0, callbacks=[Toggle(logger), logger, clock])
    kinds = {"on": {"wall": [], "cpu": []}, "off": {"wall": [], "cpu": []}}
    for epoch in range(1, len(clock.wall)):
        kind = kinds["on" if ABBA[(epoch - 1) % len(ABBA)] else "off"]
        kind["wall"].append(clock.wall[epoch])
        kind["cpu"].append(clock.cpu[epoch])
    return kinds


def toggle_rows(kinds: dict, samples: int) -> list[list[object]]:
    """The table: epochs with logging on against epochs with it off."""
    on, off = kinds["on"], kinds["off"]
    return [["off (epoch scalars only)", len(off["wall"]), f"{median(off['wall']):.3f}",
             f"{ratio(samples, median(off['wall'])):,.0f}", "", "", ""],
            ["on (+ per-batch scalars, weight histograms)", len(on["wall"]),
             f"{median(on['wall']):.3f}", f"{ratio(samples, median(on['wall'])):,.0f}",
             change(median(on["wall"]), median(off["wall"])),
             change_interval(on["wall"], off["wall"]),
             change(median(on["cpu"]), median(off["cpu"]))]]


TOGGLE_HEADER = ["epochs with logging", "epochs", "s/epoch", "samples/s", "slower (wall)",
                 "90% interval", "more CPU"]


def toggle_headline(kinds: dict) -> dict:
    """Part 3's figures for the summary."""
    on, off = kinds["on"], kinds["off"]
    low, high = median_ratio_interval(on["wall"], off["wall"])
    return {"toggle_overhead_wall": round(ratio(median(on["wall"]), median(off["wall"])) - 1, 4),
            "toggle_overhead_interval": [round(low - 1, 4), round(high - 1, 4)],
            "toggle_overhead_cpu": round(ratio(median(on["cpu"]), median(off["cpu"])) - 1, 4)}
