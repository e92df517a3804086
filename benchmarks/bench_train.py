"""Benchmark 1: train throughput of the train step against a bare ``model.fit``, and of peak.

    python -m benchmarks.bench_train [--samples 20000] [--batch-size 128] [--epochs 3]

Two arms on the same generated 28x28 data, model (the seed CNN), batch size and epochs, run
alternately in one process (``--rounds`` fits per arm: bare, step, step, bare, ...):

* **bare**: ``model.fit`` on in-memory numpy arrays, validation arrays, no callbacks;
* **step**: the train step's logic, ``fit_and_save``: tf.data from the Dataset folder
  (records, cache, shuffle, decode), the model, its callbacks (per-batch scalars, per-epoch
  histograms, hparams), validation, saving.

Throughput is the median over the epochs after the first (which traces the functions) of
samples / epoch wall time, and samples / epoch CPU time (the machine is shared: CPU time
shows the work done, wall time also what others took). GFLOP/s uses the model's FLOPs per
sample (forward, from the layer shapes, times 3 for forward + backward); the peak is the best
of a large fp32 matmul in this process. Then variants of the bare loop: XLA, batch size, and,
each in a fresh process, oneDNN off and thread settings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import tempfile
import time

from benchmarks.common import (
    IMAGE_SIDE,
    Report,
    fmt,
    main_for,
    median,
    median_ratio_interval,
    mnist_like,
    progress,
    ratio,
    write_records,
)

SHAPE = (IMAGE_SIDE, IMAGE_SIDE, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's flags."""
    parser.add_argument("--samples", type=int, default=20_000, help="training images")
    parser.add_argument("--val-samples", type=int, default=2_000, help="validation images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="per fit; the first is not timed")
    parser.add_argument("--rounds", type=int, default=4,
                        help="fits per arm, alternating bare, step, step, bare, ...")
    parser.add_argument("--variant-samples", type=int, default=4_000,
                        help="training images for the variants (0: skip the variants)")
    parser.add_argument("--no-env-variants", action="store_true",
                        help="skip the variants that need a fresh process (oneDNN, threads)")


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


def train_flops_per_sample(model) -> float:  # noqa: ANN001 - a keras.Model
    """FLOPs of one training example: 3 x the forward multiply-adds (x2) of convs and denses."""
    import keras

    forward = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            forward += 2 * h * w * cout * kh * kw * cin
        elif isinstance(layer, keras.layers.Dense):
            forward += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 3.0 * forward


def peak_gflops(seconds: float = 2.0, n: int = 2048) -> float:
    """Best fp32 GFLOP/s of an ``n`` x ``n`` matmul (TensorFlow and numpy; the better one)."""
    import numpy as np
    import tensorflow as tf

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    ta = tf.constant(a)
    best = float("inf")
    for matmul in (lambda: tf.linalg.matmul(ta, ta).numpy(), lambda: a @ a):
        matmul()
        stop = time.perf_counter() + seconds / 2
        while time.perf_counter() < stop:
            started = time.perf_counter()
            matmul()
            best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


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
        import keras

        from components.train.model import build_cnn

        started = time.perf_counter()
        steps = compile_options.pop("steps_per_execution", 1)
        model = build_cnn(SHAPE, 10, self.seed, **compile_options)
        if steps > 1:
            model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                          loss="sparse_categorical_crossentropy", steps_per_execution=steps)
        clock = epoch_clock()
        model.fit(self.x[:samples], self.y[:samples], batch_size=batch_size, epochs=epochs,
                  verbose=0,
                  validation_data=(self.xv, self.yv), callbacks=[clock])
        self.runs += 1
        model.save(os.path.join(self.root, f"bare-{self.runs}.keras"))
        return clock, time.perf_counter() - started, model

    def step(self, batch_size: int, epochs: int, **settings: object):  # noqa: ANN201
        """The train step's fit loop on the Dataset folders (logging as configured)."""
        from components.train.core import FitJob, TrainConfig, fit_and_save
        from components.train.model import build_cnn

        config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=self.seed, **settings)
        clock = epoch_clock()
        self.runs += 1
        run = os.path.join(self.root, f"step-{self.runs}")

        def build(info):  # noqa: ANN001, ANN202 - what train_model builds
            return build_cnn(info.image_shape, info.num_classes, config.seed,
                             config.learning_rate)

        job = FitJob(self.train_dir, self.val_dir, os.path.join(run, "model"),
                     os.path.join(run, "logs"), build, callbacks=(clock,))
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            fit_and_save(job, config)
        return clock, time.perf_counter() - started, None


def epoch_walls(clocks: list) -> list[float]:
    """Wall seconds of the epochs after the first, every fit together."""
    return [t for clock in clocks for t in clock.wall[1:]]


def steady(clocks: list, samples: int) -> tuple[float, float]:
    """Median samples per wall second and per CPU second over the epochs after the first."""
    wall = [t for clock in clocks for t in clock.wall[1:]]
    cpu = [t for clock in clocks for t in clock.cpu[1:]]
    return ratio(samples, median(wall)), ratio(samples, median(cpu))


def run_pair(arms: Arms, args: argparse.Namespace) -> dict:
    """Alternate bare and step ``--rounds`` times; their clocks and end-to-end seconds."""
    results: dict[str, dict] = {"bare": {"clocks": [], "e2e": []},
                                "step": {"clocks": [], "e2e": []}}
    for round_ in range(args.rounds):
        order = ("bare", "step") if round_ % 2 == 0 else ("step", "bare")
        for arm in order:
            progress(f"train: round {round_ + 1}/{args.rounds}, {arm}")
            clock, seconds, model = getattr(arms, arm)(args.batch_size, args.epochs)
            results[arm]["clocks"].append(clock)
            results[arm]["e2e"].append(seconds)
            if model is not None:
                results["flops"] = train_flops_per_sample(model)
    return results


def run(args: argparse.Namespace) -> Report:
    """Measure, and return the report."""
    from benchmarks.train_variants import env_variant_rows, variant_rows

    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-train-") as root:
        progress("train: generating data, measuring the matmul peak")
        arms = Arms(root, args.samples, args.val_samples)
        peak = peak_gflops()
        pair = run_pair(arms, args)
        peak = max(peak, peak_gflops())
        variants = variant_rows(arms, args.variant_samples) if args.variant_samples else []
    env_rows = []
    if args.variant_samples and not args.no_env_variants:
        env_rows = env_variant_rows(args.variant_samples)
    return build_report(args, pair, peak, variants, env_rows)


def build_report(args: argparse.Namespace, pair: dict, peak: float,
                 variants: list, env_rows: list) -> Report:
    """The tables and headline figures."""
    from benchmarks.train_variants import VARIANT_HEADER

    flops = pair["flops"]
    rates = {arm: steady(pair[arm]["clocks"], args.samples) for arm in ("bare", "step")}
    rows = []
    for arm, label in (("bare", "bare model.fit (numpy arrays)"),
                       ("step", "train step (records -> tf.data, callbacks, logging)")):
        wall, cpu = rates[arm]
        rows.append([label, fmt(wall), fmt(cpu), f"{ratio(wall, cpu):.2f}",
                     fmt(wall * flops / 1e9, 1), f"{wall * flops / 1e9 / peak:.0%}",
                     f"{ratio(wall, rates['bare'][0]):.3f}", f"{ratio(cpu, rates['bare'][1]):.3f}",
                     f"{median(pair[arm]['e2e']):.1f}"])
    report = Report(
        "bench_train", "1. Train throughput: train step vs bare model.fit",
        ["arm", "samples/s", "samples/CPU-s", "cores busy", "GFLOP/s", "of peak",
         "ratio (wall)", "ratio (CPU)", "end-to-end s"], rows)
    if variants:
        report.add_table("Variants of the bare loop (same process, epochs 2-3)", VARIANT_HEADER,
                         variants)
    if env_rows:
        report.add_table("Start-up settings (a fresh process each, epochs 2-3)", VARIANT_HEADER,
                         env_rows)
    step_ratio = ratio(rates["step"][0], rates["bare"][0])
    interval = median_ratio_interval(epoch_walls(pair["bare"]["clocks"]),
                                     epoch_walls(pair["step"]["clocks"]))
    report.headline = {
        "step_vs_bare_wall": round(step_ratio, 3),
        "step_vs_bare_interval": [round(v, 3) for v in interval],
        "step_vs_bare_cpu": round(ratio(rates["step"][1], rates["bare"][1]), 3),
        "step_samples_per_s": round(rates["step"][0]),
        "step_gflops": round(rates["step"][0] * flops / 1e9, 1),
        "peak_gflops": round(peak, 1),
        "fraction_of_peak": round(rates["step"][0] * flops / 1e9 / peak, 3),
        "train_mflop_per_sample": round(flops / 1e6, 2),
    }
    report.notes += [
        f"{args.samples} training + {args.val_samples} validation images 28x28, batch "
        f"{args.batch_size}, {args.epochs} epochs per fit ({args.rounds} fits per arm, "
        "alternating); median of the epochs after the first. Ratio step / bare, 90% bootstrap "
        f"interval: {interval[0]:.3f} .. {interval[1]:.3f}.",
        f"Model: {flops / 3e6:.2f} MFLOP forward per sample, {flops / 1e6:.2f} MFLOP to train "
        f"(3x); peak = best {peak:.0f} GFLOP/s of a 2048x2048 fp32 matmul in this process.",
        "GPU (mixed precision, XLA, samples/s): not measured, no GPU machine in this run.",
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone."""
    return main_for("bench_train", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
