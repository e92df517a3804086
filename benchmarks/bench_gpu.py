"""Benchmark 6: the seed CNN's training throughput on a GPU, and what logging costs there.

    KERAS_BACKEND=jax python -m benchmarks.bench_gpu [--samples 60000] [--epochs 5]

Where a GPU machine is lent. ``model.fit`` of the train step's model (``build_cnn``, the same
code and compile settings) on in-memory arrays, on the device the Keras backend uses. The lent
machine has no TensorFlow (no package index there; TensorFlow and its CUDA 12 libraries are
about 2.5 GB against a 64 MiB upload), so there it runs on Keras' JAX backend: the same model
and fit loop, compiled by XLA as TensorFlow's ``jit_compile`` does on a GPU. On any machine
it runs on whatever backend is set, so the CPU figures come from the same script.

1. **Throughput**: samples/s (median of the epochs after the first, validation included, as
   in benchmark 1) and GFLOP/s for each precision and batch size, against the best large
   matmul on the device in that precision.
2. **Logging**: the same fit with tbpipe's ``TensorBoardX`` callback as the train step uses it
   (per-batch scalars, per-epoch histograms), against no callback, alternating rounds. The
   JAX backend runs ``async_safe`` callbacks off the training loop; a third arm marks the
   callback not async-safe, which is what any plain Keras callback gets there.
3. **steps_per_execution**: batches per compiled call (one host round trip each).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks.bench_train import peak_gflops, train_flops_per_sample
from benchmarks.common import CLASSES, alternate, median, mnist_like, progress, ratio
from benchmarks.fit_arms import SHAPE, after_first, epoch_clock, steady
from benchmarks.logging_arms import NONE, gpu_logging_arms
from benchmarks.report import Report, change, change_interval, fmt, main_for

FLAGS = {
    "--samples": (60_000, "training images (MNIST's size)"),
    "--val-samples": (10_000, "validation images"),
    "--epochs": (5, "per fit; the first (compilation) is not timed"),
    "--batch-sizes": ("128,1024,4096", "throughput table: batch sizes, comma-separated"),
    "--precisions": ("float32,mixed_float16,mixed_bfloat16", "throughput table: precisions"),
    "--rounds": (3, "logging table: fits per arm, alternating"),
    "--logging-batch": (128, "logging table: batch size"),
    "--steps-per-execution": ("1,32", "steps_per_execution table (logging batch size)"),
    "--parts": ("throughput,logging,precision,steps", "which tables to measure"),
}


def device() -> tuple[str, str]:
    """The Keras backend and the device it trains on (``gpu: NVIDIA H200``, ``cpu``)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        first = jax.devices()[0]
        return backend, "cpu" if first.platform == "cpu" else f"gpu: {first.device_kind}"
    if backend == "tensorflow":
        from tbpipe.components.training.model import visible_gpus

        gpus = visible_gpus()
        return backend, f"gpu: {gpus[0]}" if gpus else "cpu"
    return backend, "unknown"


def matmul_peak_gflops(dtype: str, n: int, seconds: float = 2.0) -> float:
    """Best GFLOP/s of an ``n`` x ``n`` matmul in ``dtype`` on the backend's device.

    JAX: a jitted product on the default device; TensorFlow: ``bench_train.peak_gflops``.
    """
    import keras

    if keras.backend.backend() != "jax":
        return peak_gflops(seconds, n, dtype)
    import jax

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    product = jax.jit(lambda x: x @ x)
    product(a).block_until_ready()
    best, stop = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        product(a).block_until_ready()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


class ArrayFit:
    """Generated 28x28 data in memory, and fits of the seed CNN on it."""

    def __init__(self, samples: int, val_samples: int, epochs: int, seed: int = 42) -> None:
        images, labels = mnist_like(samples + val_samples, seed)
        pixels = images[..., None].astype("float32") / 255.0
        self.x, self.y = pixels[:samples], labels[:samples]
        self.xv, self.yv = pixels[samples:], labels[samples:]
        self.samples, self.epochs, self.seed = samples, epochs, seed
        self.flops = 0.0

    def __call__(self, batch: int, precision: str, callbacks: tuple = (),
                 steps_per_execution: int = 1) -> tuple[object, float]:
        """Build, fit; the epoch clock and the seconds build + fit took."""
        from tbpipe.components.training.model import build_cnn

        started = time.perf_counter()
        model = build_cnn(SHAPE, CLASSES, self.seed, precision=precision,
                          steps_per_execution=steps_per_execution)
        self.flops = train_flops_per_sample(model)
        clock = epoch_clock()
        model.fit(self.x, self.y, batch_size=batch, epochs=self.epochs, verbose=0,
                  validation_data=(self.xv, self.yv), callbacks=[clock, *callbacks])
        return clock, time.perf_counter() - started


def throughput_rows(fit: ArrayFit, args: argparse.Namespace) -> tuple[list, dict]:
    """Table 1: one fit per precision and batch size; the rows and the matmul peaks."""
    n = 8192 if args.device.startswith("gpu") else 2048
    dtypes = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
    peaks = {p: matmul_peak_gflops(dtypes[p], n) for p in args.precisions.split(",")}
    rows = []
    for precision, peak in peaks.items():
        for batch in map(int, args.batch_sizes.split(",")):
            progress(f"gpu: {precision}, batch {batch}")
            clock, seconds = fit(batch, precision)
            rate = steady([clock], fit.samples)[0]
            gflops = rate * fit.flops / 1e9
            rows.append([precision, batch, fmt(rate), fmt(gflops), f"{gflops / peak:.1%}",
                         fmt(peak), f"{seconds:.1f}"])
    return rows, peaks


def logging_rows(fit: ArrayFit, args: argparse.Namespace) -> tuple[list, dict]:
    """Table 2: no callback, a no-op one, and tbpipe's callback variants, alternating."""
    work: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-gpu-") as root:
        arms = gpu_logging_arms(lambda callbacks=(): fit(
            args.logging_batch, args.precision, callbacks=callbacks), root,
            -(-fit.samples // args.logging_batch), work)
        pair = alternate(args.rounds, arms, "gpu: logging")
    base = after_first(pair[NONE]["clocks"])
    rows = []
    for arm in arms:
        epochs = after_first(pair[arm]["clocks"])
        share = f"{median(work[arm]):.2%}" if arm in work else ""
        rows.append([arm, fmt(steady(pair[arm]["clocks"], fit.samples)[0]),
                     change(median(epochs), median(base)), change_interval(epochs, base), share])
    return rows, pair


def precision_rows(fit: ArrayFit, args: argparse.Namespace) -> list:
    """Table 3: mixed_float16 against mixed_bfloat16, alternating, at two batch sizes."""
    rows = []
    for batch in (args.logging_batch, 1024):
        pair = alternate(args.rounds, {p: (lambda p=p, b=batch: fit(b, p))
                                       for p in ("mixed_float16", "mixed_bfloat16")},
                         f"gpu: batch {batch}")
        fp16, bf16 = (after_first(pair[p]["clocks"]) for p in pair)
        rates = [steady(pair[p]["clocks"], fit.samples)[0] for p in pair]
        rows.append([batch, fmt(rates[0]), fmt(rates[1]), f"{ratio(rates[1], rates[0]):.3f}",
                     change_interval(fp16, bf16)])
    return rows


def steps_rows(fit: ArrayFit, args: argparse.Namespace) -> list:
    """Table 4: steps_per_execution at the logging batch size."""
    rows, base = [], 0.0
    for steps in map(int, args.steps_per_execution.split(",")):
        progress(f"gpu: steps_per_execution {steps}")
        clock, _ = fit(args.logging_batch, args.precision, steps_per_execution=steps)
        rate = steady([clock], fit.samples)[0]
        base = base or rate
        rows.append([steps, fmt(rate), f"{ratio(rate, base):.2f}"])
    return rows


def add_tables(report: Report, fit: ArrayFit, args: argparse.Namespace) -> None:
    """Tables 2-4, as ``--parts`` asks."""
    if "logging" in args.parts:
        log_rows, _ = logging_rows(fit, args)
        report.add_table(f"Logging at batch {args.logging_batch}, {args.precision} "
                         f"({args.rounds} fits per arm, alternating)",
                         ["arm", "samples/s", "epoch time", "90% interval",
                          "logging CPU / epoch"], log_rows)
        report.headline["logging"] = {row[0]: row[2:] for row in log_rows}
    if "precision" in args.parts:
        report.add_table(f"mixed_float16 vs mixed_bfloat16 ({args.rounds} fits each, "
                         "alternating)", ["batch", "float16 samples/s", "bfloat16 samples/s",
                                          "bfloat16 / float16",
                                          "90% interval, float16 / bfloat16 time - 1"],
                         precision_rows(fit, args))
    if "steps" in args.parts:
        report.add_table(f"steps_per_execution at batch {args.logging_batch}, {args.precision}",
                         ["steps_per_execution", "samples/s", "vs 1"], steps_rows(fit, args))


def run(args: argparse.Namespace) -> Report:
    """Measure, and return the report."""
    args.backend, args.device = device()
    args.precision = "mixed_float16" if args.device.startswith("gpu") else "float32"
    progress(f"gpu: Keras backend {args.backend}, device {args.device}; generating data")
    fit = ArrayFit(args.samples, args.val_samples, args.epochs)
    rows, peaks = throughput_rows(fit, args) if "throughput" in args.parts else ([], {})
    report = Report("bench_gpu", f"6. Training throughput on {args.device} "
                    f"(Keras {args.backend} backend)",
                    ["precision", "batch", "samples/s", "GFLOP/s", "of peak", "matmul peak",
                     "build + fit s"], rows)
    add_tables(report, fit, args)
    if rows:
        best = max(rows, key=lambda row: float(row[2].replace(",", "")))
        report.headline.update(best_samples_per_s=best[2], best_at=f"{best[0]}, batch {best[1]}",
                               peaks_gflops=peaks)
    report.headline.update(device=args.device, backend=args.backend)
    report.notes += [
        f"{args.samples} training + {args.val_samples} validation images 28x28 (generated), "
        f"{args.epochs} epochs per fit, median of the epochs after the first; "
        f"{fit.flops / 1e6:.2f} MFLOP to train one sample. Peak: best matmul of the size "
        "shown in each precision (XLA's default fp32 matmul precision on a GPU).",
        "Not measured by this script: the train step itself (tf.data input, checkpoints), "
        "several GPUs" + (", XLA off (JAX always compiles)." if args.backend == "jax" else "."),
    ]
    return report


if __name__ == "__main__":
    raise SystemExit(main_for("bench_gpu", __doc__, FLAGS, run))
