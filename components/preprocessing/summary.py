"""Preprocess statistics in TensorBoard: class counts, histograms, sample images, a summary."""

from __future__ import annotations

import numpy as np

from tbpipe.components.common.tensorboard.writer import image_grid, markdown_table, open_writer
from tbpipe.components.preprocessing.split import SPLITS

SAMPLE_IMAGES = 64


def pixel_stats(hist: np.ndarray) -> dict[str, float]:
    """Mean, std, min and max of the scaled pixels (b/255) from a 256-bin byte histogram.

    Sums are exact integers, so the result does not depend on how rows were chunked.
    """
    counts = [int(c) for c in hist]
    n = sum(counts)
    if n == 0:
        return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    total = sum(b * c for b, c in enumerate(counts))
    squares = sum(b * b * c for b, c in enumerate(counts))
    present = [b for b, c in enumerate(counts) if c]
    variance = (squares * n - total * total) / (n * n * 255 * 255)
    return {"mean": total / (n * 255), "std": float(np.sqrt(max(variance, 0.0))),
            "min": present[0] / 255, "max": present[-1] / 255}


def flat_metrics(stats: dict) -> dict[str, float]:
    """Flat numeric metrics for KFP: counts, examples per split, pixel statistics."""
    metrics = {key: float(stats[key]) for key in
               ("num_classes", "rows_read", "rows_dropped", "rows_kept")}
    metrics.update({f"{s}_examples": float(stats["splits"][s]["num_examples"]) for s in SPLITS})
    metrics.update({f"pixel_{k}": float(v) for k, v in stats["pixels"].items()})
    if "unreadable_files" in stats:
        metrics["unreadable_files"] = float(stats["unreadable_files"])
    metrics.update({key: float(value) for key, value in stats.items()
                    if key.startswith(("skipped_", "converted_"))})
    return metrics


def _listed(counts: dict[str, int], prefix: str = "") -> str:
    return ", ".join(f"{key.removeprefix(prefix).replace('_', ' ')} {value}"
                     for key, value in counts.items() if value)


def handled_counts(stats: dict) -> dict[str, dict[str, int]]:
    """What was dropped (rows), skipped (files) and converted (files), by reason; no zeros."""
    skipped = {k: v for k, v in stats.items()
               if (k.startswith("skipped_") or k == "unreadable_files") and v}
    return {"dropped": {k: v for k, v in stats["dropped"].items() if v},
            "skipped": skipped,
            "converted": {k: v for k, v in stats.items() if k.startswith("converted_") and v}}


def result_figure(stats: dict) -> str:
    """The step's one line for ``tbpipe run``: kept, and what was dropped, skipped, converted.

    E.g. ``kept 1790 examples (1258 train, 173 val, 359 test); dropped 7 rows (missing 7);
    skipped 3 files (unreadable files 2, hidden 1); converted 12 files (16 bit 12)``.
    """
    splits = ", ".join(f"{stats['splits'][s]['num_examples']} {s}" for s in SPLITS)
    parts = [f"kept {stats['rows_kept']} examples ({splits})"]
    handled = handled_counts(stats)
    for what, unit, prefix in (("dropped", "rows", ""), ("skipped", "files", "skipped_"),
                               ("converted", "files", "converted_")):
        if handled[what]:
            parts.append(f"{what} {sum(handled[what].values())} {unit} "
                         f"({_listed(handled[what], prefix)})")
    return "; ".join(parts)


def _histogram(writer, tag: str, counts: np.ndarray, values: np.ndarray,  # noqa: ANN001
               limits: np.ndarray) -> None:
    counts = np.asarray(counts, dtype=np.float64)
    present = np.flatnonzero(counts)
    if not len(present):
        return
    writer.add_histogram_raw(
        tag, min=float(values[present[0]]), max=float(values[present[-1]]),
        num=float(counts.sum()), sum=float(counts @ values),
        sum_squares=float(counts @ (values * values)), bucket_limits=limits.tolist(),
        bucket_counts=counts.tolist(), global_step=0)


def summary_markdown(stats: dict) -> str:
    """Render the stats as Markdown: source, row counts, per-split table, pixel statistics."""
    shape = "x".join(str(d) for d in stats["image_shape"])
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats["dropped"].items())
    rows = [[s, stats["splits"][s]["num_examples"],
             " ".join(str(c) for c in stats["splits"][s]["class_counts"])] for s in SPLITS]
    pixels = ", ".join(f"{k} {v:.4f}" for k, v in stats["pixels"].items())
    return "\n\n".join([
        f"**Source** `{stats['source']}`: images {shape}, {stats['num_classes']} classes",
        f"Rows read {stats['rows_read']}, dropped {stats['rows_dropped']} ({dropped}), "
        f"kept {stats['rows_kept']}; seed {stats['seed']}"
        + (f"; unreadable files {stats['unreadable_files']}" if "unreadable_files" in stats
           else ""),
        *([f"Classes: {', '.join(stats['class_names'])}"] if stats.get("class_names") else []),
        *([f"Files skipped: {_listed(skipped, 'skipped_')}"]
          if (skipped := handled_counts(stats)["skipped"]) else []),
        *([f"Files converted: {_listed(converted, 'converted_')}"]
          if (converted := handled_counts(stats)["converted"]) else []),
        markdown_table(["split", "examples", "class counts 0..k-1"], rows),
        f"Pixels (scaled to [0, 1]): {pixels}",
        *([f"Pixel values read: {v['min']:g}..{v['max']:g}, full brightness "
           f"{v['scale_max'] or 255:g}"] if (v := stats.get("pixel_values")) else []),
    ])


def class_count_table(stats: dict) -> str:
    """The examples of each class in each split, as one Markdown table (a row per class)."""
    counts = [stats["splits"][split]["class_counts"] for split in SPLITS]
    names = stats.get("class_names") or [str(k) for k in range(len(counts[0]))]
    rows = [[name, *(split_counts[k] for split_counts in counts), sum(c[k] for c in counts)]
            for k, name in enumerate(names)]
    return markdown_table(["class", *SPLITS, "all"], rows)


def log_summary(log_dir: str, stats: dict, pixel_hist: np.ndarray,
                samples: list[np.ndarray]) -> None:
    """Write the data statistics to TensorBoard under ``data/`` (all at step 0).

    Class counts are one text table (``data/class_counts``) and the ``data/labels``
    histogram, not a one-point scalar chart per class, which would fill the scalar dashboard
    ahead of the training curves.
    """
    with open_writer(log_dir) as writer:
        writer.add_text("data/class_counts", class_count_table(stats), 0)
        for split in SPLITS:
            writer.add_scalar(f"data/num_examples/{split}", stats["splits"][split]["num_examples"],
                              0)
        for key in ("rows_read", "rows_dropped", "rows_kept"):
            writer.add_scalar(f"data/{key}", stats[key], 0)
        label_counts = np.sum([stats["splits"][s]["class_counts"] for s in SPLITS], axis=0)
        classes = np.arange(len(label_counts), dtype=np.float64)
        _histogram(writer, "data/labels", label_counts, classes, classes + 0.5)
        levels = np.arange(256, dtype=np.float64)
        _histogram(writer, "data/pixels", pixel_hist, levels / 255, (levels + 0.5) / 255)
        if samples:
            images = np.concatenate(samples).astype(np.float32) / 255.0
            writer.add_image("data/samples", image_grid(images), 0, dataformats="CHW")
        writer.add_text("data/summary", summary_markdown(stats), 0)
