"""Image folders: images decoded per second and peak memory through preprocess.

    python -m benchmarks.bench_images [--files 10000] [--full]

Generates ``--files`` small PNGs (28x28 MNIST-like bytes, see ``common.mnist_like``, grayscale
with every fifth one RGB and every tenth a different size, so the size and channel defaults
and the resize are exercised) in one folder per class, then runs the preprocess step's logic
(``preprocess_data``: scan the headers, decode in a thread pool chunk by chunk, split, write
the three Datasets, log the summary) in a fresh process, which reports its time and its peak
RSS (``VmHWM``) next to its peak after the imports. ``--full`` uses 100,000 files.
"""

from __future__ import annotations

import argparse
import os

from benchmarks.common import mnist_like, progress, ratio, work_folder
from benchmarks.report import Report, fmt, in_fresh_process, main_for

GEN_CHUNK = 10_000

FLAGS = {
    "--files": (10_000, "PNG files to generate"),
    "--full": (False, "generate 100,000 files"),
    "--keep": (None, "generate the folder here and keep it"),
}


def write_folder(root: str, files: int) -> None:
    """``files`` PNGs in ``root/digit-K/``, ``GEN_CHUNK`` generated at a time."""
    from PIL import Image

    for index, start in enumerate(range(0, files, GEN_CHUNK)):
        images, labels = mnist_like(min(GEN_CHUNK, files - start), seed=index)
        for offset, (image, label) in enumerate(zip(images, labels, strict=True)):
            number = start + offset
            folder = os.path.join(root, f"digit-{label}")
            os.makedirs(folder, exist_ok=True)
            picture = Image.fromarray(image)
            if number % 5 == 0:
                picture = picture.convert("RGB")
            if number % 10 == 1:
                picture = picture.resize((32, 32))
            picture.save(os.path.join(folder, f"{number:07d}.png"))


def child(args: argparse.Namespace) -> dict:
    """In a fresh process: preprocess the folder ``args.child``; seconds, images, peak memory."""
    import PIL.Image  # noqa: F401 - imported before the baseline, like the reader does
    import tensorboardX  # noqa: F401

    from benchmarks.bench_preprocess import measure_preprocess

    seconds, result, peak, baseline = measure_preprocess(args.child)
    return {"seconds": seconds, "images": result.stats["rows_read"],
            "shape": list(result.image_shape), "peak_mb": peak, "baseline_mb": baseline}


def run(args: argparse.Namespace) -> Report:
    """Generate the folder, measure preprocess on it in a fresh process, return the report."""
    files = 100_000 if args.full else args.files
    with work_folder(args.keep, "tbpipe-bench-images-") as folder:
        root = os.path.join(folder, f"images-{files}")
        if not os.path.exists(root):
            progress(f"images: writing {files:,} PNGs")
            write_folder(root, files)
        progress(f"images: preprocess of {files:,} PNGs")
        result = in_fresh_process("bench_images", ["--child", root])
    per_s = ratio(result["images"], result["seconds"])
    report = Report("bench_images", "Image folders: images decoded per second, peak memory",
                    ["files", "images", "shape", "seconds", "images/s", "peak RSS MB",
                     "above imports MB"],
                    [[fmt(files), fmt(result["images"]), "x".join(map(str, result["shape"])),
                      f"{result['seconds']:.1f}", fmt(per_s), fmt(result["peak_mb"]),
                      fmt(result["peak_mb"] - result["baseline_mb"])]])
    report.headline["images_per_s"] = round(per_s)
    report.headline["peak_mb"] = round(result["peak_mb"])
    report.notes.append(f"{os.cpu_count()} CPUs; decoding threads: min(8, CPUs); chunks of "
                        "10,000 files (two in memory at a time).")
    return report


if __name__ == "__main__":
    raise SystemExit(main_for("bench_images", __doc__, FLAGS, run, child))
