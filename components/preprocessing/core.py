"""Preprocess logic: read a labelled image table, clean, scale, split, write Datasets, log.

Everything streams chunk by chunk: rows are read, cleaned and quantized to bytes (value
b/255) by :mod:`tbpipe.components.preprocessing.clean`, and handed to a
:class:`~.split.StratifiedSplitter`, which writes each split through a
:class:`~tbpipe.components.common.dataset.DatasetWriter`. Peak memory does not grow with the table,
and the outputs are byte-identical for the same data and seed whatever ``chunk_rows`` is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import numpy as np

from tbpipe.components.common import storage
from tbpipe.components.common.dataset import (
    MAX_CLASSES,
    DatasetInfo,
    DatasetWriter,
    label_width,
)
from tbpipe.components.common.errors import InputError, os_errors
from tbpipe.components.preprocessing.clean import PixelScale, RowTally, clean_chunk
from tbpipe.components.preprocessing.config import PreprocessConfig
from tbpipe.components.preprocessing.readers import open_source
from tbpipe.components.preprocessing.source import Source
from tbpipe.components.preprocessing.split import SPLITS, StratifiedSplitter, finish_writer
from tbpipe.components.preprocessing.summary import flat_metrics, log_summary, pixel_stats

STEP = "preprocess"
DEFAULT_DATA = "builtin:digits"
STATS_FILE = "stats.json"
PROGRESS_SECS = 10.0


@dataclasses.dataclass(frozen=True)
class PreprocessResult:
    """What preprocess wrote: one manifest per split, JSON-able stats and flat metrics."""

    train: DatasetInfo
    val: DatasetInfo
    test: DatasetInfo
    stats: dict
    metrics: dict

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of every split."""
        return self.train.image_shape

    @property
    def num_classes(self) -> int:
        """Number of classes (max label + 1)."""
        return self.train.num_classes


def _check_outputs(*uris: str) -> None:
    """Refuse gs:// outputs and outputs that name the same folder twice."""
    for uri in uris:
        if storage.is_remote(uri):
            raise InputError(f"{uri}: outputs must be local folders (a KFP artifact's .path)")
    if len({os.path.abspath(u) for u in uris}) != len(uris):
        raise InputError(f"train/val/test outputs must be three different folders, got {uris}")


def _stream(source: Source, splitter: StratifiedSplitter, test_writer: DatasetWriter,
            scale: PixelScale) -> RowTally:
    """Clean every chunk of ``source``; fixed test rows go to ``test_writer``, others split."""
    tally, last_report = RowTally(), time.monotonic()
    print(f"preprocess: reading {source.name} (images {source.image_shape})", flush=True)
    for chunk in source.chunks():
        images, labels, dropped = clean_chunk(source.name, chunk, scale, source.image_shape,
                                              first_row=tally.rows_read)
        tally.add(len(chunk.labels), images, labels, dropped, chunk.labels)
        if chunk.split == "test":
            test_writer.write(images, labels)
        else:
            splitter.add(images, labels)
        if time.monotonic() - last_report >= PROGRESS_SECS:
            last_report = time.monotonic()
            print(f"preprocess: {tally.rows_read} rows read, {tally.rows_dropped} dropped",
                  flush=True)
    splitter.finish()
    return tally


def _check_tally(name: str, tally: RowTally, class_names: tuple[str, ...] = ()) -> int:
    """Validate what was read; return the number of classes (max label + 1).

    Every class 0..k-1 must keep rows: a class whose every row was dropped, or a label
    number no row has below the highest, would be a model output never trained, while the
    accuracy on the other classes looks fine.
    """
    if tally.rows_read == 0:
        raise InputError(f"{name}: the table has no rows; give a table with labelled images")
    present = np.flatnonzero(tally.label_counts)
    if len(present) == 0:
        raise InputError(f"{name}: all {tally.rows_read} rows were dropped ({tally.dropped}); "
                         "fix missing values, labels and pixel ranges")
    if len(present) < 2:
        raise InputError(f"{name}: only class {present[0]} is present; classification needs "
                         "at least 2 classes")
    read = np.flatnonzero(tally.read_label_counts)
    num_classes = max(int(present[-1]), int(read[-1]) if len(read) else 0) + 1
    missing = np.flatnonzero(tally.label_counts[:num_classes] == 0)
    if len(missing):
        k = int(missing[0])
        label = f"class {class_names[k]!r}" if k < len(class_names) else f"class {k}"
        had = int(tally.read_label_counts[k])
        if had:
            raise InputError(f"{name}: {label}: all its {had} rows were dropped (missing or "
                             f"out-of-range pixels: {tally.dropped}); fix them, or the class "
                             "would be a model output never trained")
        raise InputError(f"{name}: {label} has no rows but labels go up to "
                         f"{num_classes - 1} ({len(missing)} class number(s) unused); number "
                         "the classes 0..k-1 without gaps, or the missing ones would be model "
                         "outputs never trained")
    return num_classes


def build_stats(data_uri: str, config: PreprocessConfig, source: Source, tally: RowTally,
                infos: dict[str, DatasetInfo], scale: PixelScale) -> dict:
    """Collect the JSON-able statistics of a run (no timings, so equal runs compare equal)."""
    return {
        "source": data_uri,
        "image_shape": list(source.image_shape),
        "num_classes": infos["train"].num_classes,
        "class_names": list(infos["train"].class_names),
        **source.counts,
        "rows_read": tally.rows_read,
        "rows_dropped": tally.rows_dropped,
        "rows_kept": tally.rows_read - tally.rows_dropped,
        "dropped": dict(tally.dropped),
        "splits": {s: {"num_examples": infos[s].num_examples,
                       "class_counts": list(infos[s].class_counts)} for s in SPLITS},
        "pixels": pixel_stats(tally.pixel_hist),
        "pixel_values": {"min": scale.low, "max": scale.high, "scale_max": scale.value},
        "seed": config.seed,
        "val_fraction": config.val_fraction,
        "test_fraction": 0.0 if source.has_test_split else config.test_fraction,
        "fixed_test_split": source.has_test_split,
    }


def preprocess_data(data_uri: str, train_uri: str, val_uri: str, test_uri: str,
                    log_dir: str | None, config: PreprocessConfig) -> PreprocessResult:
    """Read ``data_uri``, clean, scale, split stratified, and write three Datasets.

    Args:
        data_uri: A .csv/.csv.gz/.parquet/.pq table (local or gs://), a folder of MNIST IDX
            files, ``builtin:digits`` or ``builtin:mnist``.
        train_uri: Local folder for the training Dataset (also holds ``stats.json``).
        val_uri: Local folder for the validation Dataset.
        test_uri: Local folder for the test Dataset.
        log_dir: TensorBoard log folder (local or gs://), or None for no logs.
        config: Split fractions, seed, shape and chunking.

    Returns:
        The three manifests, the statistics and flat metrics. All three folders appear
        together only when everything succeeded.

    """
    _check_outputs(train_uri, val_uri, test_uri)
    uris = dict(zip(SPLITS, (train_uri, val_uri, test_uri), strict=True))
    with open_source(data_uri, config.chunk_rows, config.image_shape, config.image_hw,
                     config.channels) as source, \
            contextlib.ExitStack() as stack:
        roots = {s: stack.enter_context(storage.atomic_dir(uris[s])) for s in SPLITS}
        scale = PixelScale(source.name, source.max_value, source.columns)
        tally, infos = _write_splits(data_uri, source, roots, uris, config, scale)
        stats = build_stats(data_uri, config, source, tally, infos, scale)
        _save_stats(roots["train"], train_uri, stats, tally, infos, scale, source.counts)
        if log_dir:
            log_summary(log_dir, stats, tally.pixel_hist, tally.samples)
    return PreprocessResult(infos["train"], infos["val"], infos["test"], stats,
                            flat_metrics(stats))


def _write_splits(data_uri: str, source: Source, roots: dict[str, str], uris: dict[str, str],
                  config: PreprocessConfig, scale: PixelScale
                  ) -> tuple[RowTally, dict[str, DatasetInfo]]:
    """Stream ``source`` into one Dataset per split under ``roots``; check and finish them.

    ``roots`` are temporary folders that become ``uris``, the paths error lines name.
    """
    # An image folder knows its classes; a table's labels widen the records past 255.
    known = len(source.class_names)
    writers = {s: DatasetWriter(roots[s], source.image_shape, known or MAX_CLASSES,
                                config.shard_records, name=uris[s],
                                label_bytes=label_width(known) if known else 1)
               for s in SPLITS}
    test_fraction = 0.0 if source.has_test_split else config.test_fraction
    splitter = StratifiedSplitter(writers, config.val_fraction, test_fraction, config.seed)
    tally = _stream(source, splitter, writers["test"], scale)
    num_classes = max(_check_tally(data_uri, tally, source.class_names), known)
    infos = {s: finish_writer(writers[s], num_classes, source.class_names) for s in SPLITS}
    _check_splits(data_uri, infos, config, fixed_test=source.has_test_split)
    return tally, infos


def _check_splits(data_uri: str, infos: dict[str, DatasetInfo], config: PreprocessConfig,
                  fixed_test: bool) -> None:
    """InputError (one line) for a split the fractions leave empty on this much data.

    Train and val are always needed (train validates on val); test when it is split off
    (``test_fraction`` > 0) or the source has its own. Checked once the class counts are
    known; the outputs are not published then.
    """
    kept = sum(info.num_examples for info in infos.values())
    fractions = {"val": config.val_fraction, "test": config.test_fraction}
    for split in SPLITS:
        needed = split != "test" or fixed_test or config.test_fraction > 0
        if not needed or infos[split].num_examples:
            continue
        if split == "train":
            advice = "give more rows or lower val_fraction/test_fraction"
        elif split == "test" and fixed_test:
            advice = "the source's own test set is empty; give one with test rows"
        else:
            advice = f"raise {split}_fraction (now {fractions[split]:g}) or give more rows"
        raise InputError(f"{data_uri}: the {split} split would get 0 of {kept} rows; {advice}")


def _save_stats(train_root: str, train_uri: str, stats: dict, tally: RowTally,
                infos: dict[str, DatasetInfo], scale: PixelScale,
                counts: dict[str, int] | None = None) -> None:
    """Write ``stats.json`` into the training Dataset's folder and print the summary line."""
    with os_errors(train_uri), open(os.path.join(train_root, STATS_FILE), "w") as handle:
        handle.write(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    print(summary_line(tally, infos, scale, counts), flush=True)


def summary_line(tally: RowTally, infos: dict[str, DatasetInfo], scale: PixelScale,
                 counts: dict[str, int] | None = None) -> str:
    """The one summary line: rows kept, pixel values seen and their scale, classes, split.

    ``counts`` adds what the reader counted (an image folder's unreadable files).
    """
    names = infos["train"].class_names
    classes = " ".join(f"{names[label]}:{count}"
                       for label, count in enumerate(tally.label_counts[:len(names)]) if count)
    extra = "".join(f"{key.replace('_', ' ')} {value}; " for key, value in (counts or {}).items())
    return (f"preprocess: kept {tally.rows_read - tally.rows_dropped} of {tally.rows_read} "
            f"rows, dropped {tally.rows_dropped} ({tally.dropped}); {extra}pixel values "
            f"{scale.range_seen()} read as {scale.describe()}; classes {classes}; split "
            f"{ {s: infos[s].num_examples for s in SPLITS} }")
