"""Batch prediction: images per second and peak memory for 1,000 against 10,000 files.

    python -m benchmarks.bench_batch_predict [--sizes 1000,10000] [--batch-size 256]

Generates the files (28x28 MNIST-like PNGs, ``bench_images.write_folder``: every fifth RGB,
every tenth 32x32, so conversion and resizing run) and a Model folder with a small untrained
CNN on 28x28x1 and 10 classes, exported as the select step exports it (``choose_model``:
``saved_model/1/``). Each size runs the batch-predict step's logic (``batch_predict_images``:
list, read in threads, predict by the SavedModel, write Parquet, log the histogram) in a fresh
process, after a warm-up run of one batch in that process (imports, the SavedModel loaded
once, TensorFlow's first call), so the figures are the streaming itself. Reported per size:
images/s, peak RSS (``VmHWM``) and the peak above the warm-up's. Memory stays flat when the
ratio of peaks (largest size over smallest) is near 1 while the files grow tenfold.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks.bench_images import write_folder
from benchmarks.bench_preprocess import peak_rss_mb
from benchmarks.common import progress, ratio, work_folder
from benchmarks.report import Report, fmt, in_fresh_process, main_for

FLAGS = {
    "--sizes": ("1000,10000", "numbers of files, comma-separated"),
    "--batch-size": (256, "images per batch"),
    "--keep": (None, "generate the folders here and keep them"),
}


def write_model(folder: str) -> str:
    """A small untrained CNN (28x28x1 -> 10) as a selected Model folder; its path."""
    import keras

    from tbpipe.components.common.model_format import save_model_folder
    from tbpipe.components.selection.core import choose_model

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")])
    trained = os.path.join(folder, "trained")
    save_model_folder(model, trained, {"image_shape": [28, 28, 1], "num_classes": 10,
                                       "epochs": 0})
    choose_model(trained, 0.0, os.path.join(folder, "model"))
    return os.path.join(folder, "model")


def child(args: argparse.Namespace) -> dict:
    """In a fresh process: warm up on one batch, then predict the folder; time and memory."""
    import tempfile

    from tbpipe.components.prediction.config import BatchPredictConfig
    from tbpipe.components.prediction.core import batch_predict_images, iter_image_uris

    model, images, batch = args.child.split("|")
    config = BatchPredictConfig(batch_size=int(batch))
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-bp-") as out:
        warm = [uri for uri, _ in zip(iter_image_uris(images), range(int(batch)), strict=False)]
        batch_predict_images(model, warm, os.path.join(out, "warm.parquet"),
                             os.path.join(out, "logs-warm"), config)
        baseline = peak_rss_mb()
        started = time.perf_counter()
        result = batch_predict_images(model, images, os.path.join(out, "out.parquet"),
                                      os.path.join(out, "logs"), config)
        seconds = time.perf_counter() - started
    return {"images": result.images, "failed": result.failed, "seconds": seconds,
            "peak_mb": peak_rss_mb(), "baseline_mb": baseline}


def run(args: argparse.Namespace) -> Report:
    """Generate the folders and the model, measure each size in a fresh process."""
    sizes = [int(s) for s in str(args.sizes).split(",")]
    rows, results = [], {}
    with work_folder(args.keep, "tbpipe-bench-bp-") as folder:
        model = os.path.join(folder, "model")
        if not os.path.exists(model):
            progress("batch predict: writing the model")
            write_model(folder)
        for size in sizes:
            root = os.path.join(folder, f"images-{size}")
            if not os.path.exists(root):
                progress(f"batch predict: writing {size:,} PNGs")
                write_folder(root, size)
            progress(f"batch predict: {size:,} files")
            result = in_fresh_process("bench_batch_predict",
                                      ["--child", f"{model}|{root}|{args.batch_size}"])
            results[size] = result
            rows.append([fmt(size), fmt(result["images"]), f"{result['seconds']:.1f}",
                         fmt(ratio(result["images"], result["seconds"])),
                         fmt(result["peak_mb"]), fmt(result["peak_mb"] - result["baseline_mb"])])
    small, large = results[min(sizes)], results[max(sizes)]
    report = Report("bench_batch_predict",
                    "Batch prediction: images/s and peak memory as the files grow",
                    ["files", "images", "seconds", "images/s", "peak RSS MB",
                     "above warm-up MB"], rows)
    report.headline["images_per_s"] = round(ratio(large["images"], large["seconds"]))
    report.headline["peak_ratio"] = round(large["peak_mb"] / small["peak_mb"], 3)
    report.notes.append(
        f"peak RSS {max(sizes):,} files / {min(sizes):,} files: "
        f"{large['peak_mb'] / small['peak_mb']:.3f} ({os.cpu_count()} CPUs, batches of "
        f"{args.batch_size}, 4 reading threads, Parquet out, local disk).")
    return report


if __name__ == "__main__":
    raise SystemExit(main_for("bench_batch_predict", __doc__, FLAGS, run, child))
