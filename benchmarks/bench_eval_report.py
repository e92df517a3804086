"""Evaluation's misclassified thumbnails: their cost, and memory flat in the test set's size.

    python -m benchmarks.bench_eval_report [--examples 20000,200000] [--rounds 5]

The evaluate step's per-batch bookkeeping (``core._predict_totals`` without the model: the
confusion matrix and the PR histograms of each batch of 256) on MNIST-like uint8 images
(``common.mnist_like``) and generated probabilities (about 20 % of the examples wrong), with
and without the :class:`MistakeSample` that keeps the 64 surest mistakes as thumbnails, arms
in A B B A order: the ratio of their times. Then the peak memory Python allocates
(``tracemalloc``) while the sample streams each test-set size (the images themselves are
generated before tracing starts), and the time to render the HTML report with 64 thumbnails.
No TensorFlow: the model's forward pass, which dominates a real evaluation, is left out, so
the ratio is an upper bound of what the thumbnails add to the step.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from benchmarks.common import CLASSES, alternate, median, median_ratio_interval, mnist_like
from benchmarks.report import Report, fmt, main_for

BATCH = 256

FLAGS = {
    "--examples": ("20000,200000", "test-set sizes (comma-separated); the first is timed"),
    "--rounds": (5, "runs per arm (A B B A order)"),
}


def probabilities(labels: np.ndarray, seed: int) -> np.ndarray:
    """Softmax-like rows: the true class most likely, except for about 20 % of the rows."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(labels), CLASSES))
    right = rng.random(len(labels)) > 0.2
    logits[np.arange(len(labels))[right], labels[right]] += 4.0
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def stream(images: np.ndarray, labels: np.ndarray, probs: np.ndarray, sample) -> float:  # noqa: ANN001
    """The evaluate step's per-batch sums (and ``sample``, if any); seconds taken."""
    from tbpipe.components.evaluation.metrics import confusion_matrix, pr_histograms

    start = time.perf_counter()
    confusion = np.zeros((CLASSES, CLASSES), np.int64)
    for first in range(0, len(labels), BATCH):
        part = slice(first, first + BATCH)
        confusion += confusion_matrix(labels[part], probs[part].argmax(axis=1), CLASSES)
        pr_histograms(labels[part], probs[part])
        if sample is not None:
            sample.add(images[part][..., None], labels[part], probs[part], first)
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> Report:
    """Time both arms on the first size, trace memory on every size, time the HTML."""
    from tbpipe.components.evaluation.config import EvaluateConfig
    from tbpipe.components.evaluation.core import summarize
    from tbpipe.components.evaluation.misclassified import MistakeSample
    from tbpipe.components.evaluation.report import render_html_report

    sizes = [int(s) for s in str(args.examples).split(",")]
    images, labels = mnist_like(sizes[0], seed=1)
    probs = probabilities(labels, seed=2)
    arms = {"sums only": lambda: (0.0, stream(images, labels, probs, None)),
            "sums + thumbnails": lambda: (0.0, stream(images, labels, probs, MistakeSample()))}
    timed = alternate(args.rounds, arms, "eval_report")
    base, with_sample = timed["sums only"]["e2e"], timed["sums + thumbnails"]["e2e"]
    low, high = median_ratio_interval(with_sample, base)
    rows = [["sums only", f"{median(base):.3f}", "1.00"],
            ["sums + thumbnails", f"{median(with_sample):.3f}",
             f"{median(with_sample) / median(base):.2f} ({low:.2f}-{high:.2f})"]]
    report = Report("bench_eval_report", "Evaluation: the misclassified thumbnails' cost",
                    ["arm", f"seconds for {fmt(sizes[0])} examples", "ratio (90% interval)"],
                    rows)
    memory_rows = []
    for size in sizes:
        images, labels = mnist_like(size, seed=1)
        probs = probabilities(labels, seed=2)
        sample = MistakeSample()
        tracemalloc.start()
        stream(images, labels, probs, sample)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        memory_rows.append([fmt(size), fmt(sample.total), len(sample.mistakes()),
                            f"{peak / 2**20:.2f}", f"{images.nbytes / 2**20:.1f}"])
    report.add_table("Peak memory allocated while streaming (the test images excluded)",
                     ["examples", "misclassified", "kept", "peak MiB", "test images MiB"],
                     memory_rows)
    confusion = np.bincount(labels * CLASSES + probs.argmax(axis=1),
                            minlength=CLASSES * CLASSES).reshape(CLASSES, CLASSES)
    result = summarize(confusion, 0.0, 0.5)
    start = time.perf_counter()
    page = render_html_report(result, sample.mistakes(), sample.total, "model", "test", {},
                              EvaluateConfig())
    render_s = time.perf_counter() - start
    report.notes.append(f"HTML report with {len(sample.mistakes())} thumbnails: "
                        f"{render_s * 1000:.0f} ms, {len(page) / 1024:.0f} KiB.")
    report.headline["thumbnails_ratio"] = round(median(with_sample) / median(base), 2)
    report.headline["peak_mib_largest"] = float(memory_rows[-1][3])
    return report


if __name__ == "__main__":
    raise SystemExit(main_for("bench_eval_report", __doc__, FLAGS, run))
