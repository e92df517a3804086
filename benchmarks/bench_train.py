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
of a large matmul in the arms' compute type (``--precision``: bfloat16 for mixed_bfloat16,
else fp32) in this process, and the fp32 peak too. Then variants of the bare loop: XLA, batch
size, the other precision, and, each in a fresh process, oneDNN off and thread settings.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.common import alternate, median, median_ratio_interval, progress, ratio
from benchmarks.fit_arms import Arms, after_first, steady
from benchmarks.report import Report, fmt, main_for

FLAGS = {
    "--samples": (20_000, "training images"),
    "--val-samples": (2_000, "validation images"),
    "--batch-size": (128, None),
    "--epochs": (3, "per fit; the first is not timed"),
    "--rounds": (4, "fits per arm, alternating bare, step, step, bare, ..."),
    "--variant-samples": (4_000, "training images for the variants (0: skip the variants)"),
    "--precision": ("auto", "both arms' precision (auto: what the train step picks here: "
                            "mixed_bfloat16 on a CPU with AMX-BF16, else float32)"),
    "--no-env-variants": (False, "skip the variants that need a fresh process (oneDNN, "
                                 "threads)"),
}


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


def peak_gflops(seconds: float = 2.0, n: int = 2048, dtype: str = "float32") -> float:
    """Best GFLOP/s of an ``n`` x ``n`` matmul in ``dtype`` (TensorFlow, and numpy for fp32)."""
    import numpy as np
    import tensorflow as tf

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    ta = tf.cast(tf.constant(a), dtype)
    best = float("inf")
    matmuls = [lambda: tf.linalg.matmul(ta, ta).numpy()]
    if dtype == "float32":
        matmuls.append(lambda: a @ a)
    for matmul in matmuls:
        matmul()
        stop = time.perf_counter() + seconds / 2
        while time.perf_counter() < stop:
            started = time.perf_counter()
            matmul()
            best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def run_pair(arms: Arms, args: argparse.Namespace) -> tuple[dict, float]:
    """Alternate bare and step ``--rounds`` times; their clocks, seconds, and FLOPs/sample."""
    flops = []

    def bare() -> tuple[object, float]:
        clock, seconds, model = arms.bare(args.batch_size, args.epochs,
                                          precision=args.precision)
        flops.append(train_flops_per_sample(model))
        return clock, seconds

    pair = alternate(args.rounds, {"bare": bare, "step": lambda: arms.step(
        args.batch_size, args.epochs, precision=args.precision)[:2]}, "train:")
    return pair, flops[-1]


def run(args: argparse.Namespace) -> Report:
    """Measure, and return the report."""
    from benchmarks.train_variants import env_variant_rows, variant_rows
    from tbpipe.components.training.model import resolve_precision

    args.precision = resolve_precision(args.precision)
    dtype = "bfloat16" if args.precision == "mixed_bfloat16" else "float32"
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-train-") as root:
        progress(f"train: generating data, measuring the {dtype} matmul peak")
        arms = Arms(root, args.samples, args.val_samples)
        peak = peak_gflops(dtype=dtype)
        pair, flops = run_pair(arms, args)
        peak = max(peak, peak_gflops(dtype=dtype))
        args.fp32_peak = peak if dtype == "float32" else peak_gflops()
        variants = (variant_rows(arms, args.variant_samples, args.precision)
                    if args.variant_samples else [])
    env_rows = []
    if args.variant_samples and not args.no_env_variants:
        env_rows = env_variant_rows(args.variant_samples, args.precision)
    return build_report(args, pair, flops, peak, variants, env_rows)


def build_report(args: argparse.Namespace, pair: dict, flops: float, peak: float,
                 variants: list, env_rows: list) -> Report:
    """The tables, headline figures and notes."""
    from benchmarks.train_variants import VARIANT_HEADER

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
    interval = median_ratio_interval(after_first(pair["bare"]["clocks"]),
                                     after_first(pair["step"]["clocks"]))
    report.headline = headline(rates, interval, flops, peak, args.fp32_peak)
    report.notes += notes(args, interval, flops, peak)
    return report


def headline(rates: dict, interval: tuple[float, float], flops: float, peak: float,
             fp32_peak: float) -> dict:
    """The figures ``python -m benchmarks`` sums up: step / bare, GFLOP/s, peak."""
    step_gflops = rates["step"][0] * flops / 1e9
    return {
        "step_vs_bare_wall": round(ratio(rates["step"][0], rates["bare"][0]), 3),
        "step_vs_bare_interval": [round(v, 3) for v in interval],
        "step_vs_bare_cpu": round(ratio(rates["step"][1], rates["bare"][1]), 3),
        "step_samples_per_s": round(rates["step"][0]),
        "step_gflops": round(step_gflops, 1),
        "peak_gflops": round(peak, 1),
        "fraction_of_fp32_peak": round(step_gflops / fp32_peak, 3),
        "fraction_of_peak": round(step_gflops / peak, 3),
        "train_mflop_per_sample": round(flops / 1e6, 2),
    }


def notes(args: argparse.Namespace, interval: tuple[float, float], flops: float,
          peak: float) -> list[str]:
    """What was run, the model's FLOPs and the peak, what was not measured."""
    return [
        f"Both arms in {args.precision}. {args.samples} training + {args.val_samples} "
        f"validation images 28x28, batch "
        f"{args.batch_size}, {args.epochs} epochs per fit ({args.rounds} fits per arm, "
        "alternating); median of the epochs after the first. Ratio step / bare, 90% bootstrap "
        f"interval: {interval[0]:.3f} .. {interval[1]:.3f}.",
        f"Model: {flops / 3e6:.2f} MFLOP forward per sample, {flops / 1e6:.2f} MFLOP to train "
        f"(3x); peak = best {peak:.0f} GFLOP/s of a 2048x2048 matmul in the arms' compute "
        f"type in this process (fp32: {args.fp32_peak:.0f} GFLOP/s).",
        "On a GPU: benchmarks.bench_gpu (samples/s per precision and batch size, logging; "
        "docs/performance.md section 6).",
    ]


def summary(t: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    return ["1 train throughput", f"step / bare model.fit = {t['step_vs_bare_wall']} "
            f"(wall), {t['step_vs_bare_cpu']} (CPU); {t['step_gflops']} GFLOP/s = "
            f"{t['fraction_of_fp32_peak']:.0%} of the fp32 peak, "
            f"{t['fraction_of_peak']:.0%} of {t['peak_gflops']} in the arms' precision",
            ">= 1.0; half of peak"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_train", __doc__, FLAGS, run, summary=summary))
