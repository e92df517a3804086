"""Preprocess logic: read a labelled image table, clean, scale, split, write Datasets, log.

Everything streams chunk by chunk: rows are read, cleaned, quantized to bytes (value b/255)
and handed to a :class:`~components.preprocess.split.StratifiedSplitter`, which writes each
split through a :class:`~components.common.dataset.DatasetWriter`. Peak memory does not grow
with the table, and the outputs are byte-identical for the same data and seed whatever
``chunk_rows`` is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time

import numpy as np

from components.common import storage
from components.common.dataset import MAX_CLASSES, DatasetInfo, DatasetWriter, to_uint8
from components.common.errors import InputError
from components.preprocess.readers import RawChunk, Source, open_source
from components.preprocess.split import SPLITS, StratifiedSplitter, finish_writer
from components.preprocess.summary import SAMPLE_IMAGES, flat_metrics, log_summary, pixel_stats

STEP = "preprocess"
DEFAULT_DATA = "builtin:digits"
STATS_FILE = "stats.json"
DROP_REASONS = ("missing", "bad_label", "out_of_range")
PROGRESS_SECS = 10.0


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How to clean and split the data.

    Attributes:
        val_fraction: Share of each class that goes to validation, in [0, 1).
        test_fraction: Share of each class that goes to test, in [0, 1); ignored when the
            source has its own test set (MNIST t10k files, builtin:mnist).
        seed: Seed of the split (non-negative); same seed and data give identical bytes.
        image_shape: (height, width, channels) of table rows; default: square, 1 channel.
        chunk_rows: Rows read and processed at a time (bounds peak memory).
        shard_records: Records per shard file of the output Datasets.

    """

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 42
    image_shape: tuple[int, int, int] | None = None
    chunk_rows: int = 10_000
    shard_records: int = 50_000

    def __post_init__(self) -> None:
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise InputError(f"{name}={value}: must be in [0, 1), e.g. 0.1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise InputError(f"val_fraction + test_fraction = "
                             f"{self.val_fraction + self.test_fraction}: must be below 1 "
                             "so rows are left for training")
        if self.seed < 0:
            raise InputError(f"seed={self.seed}: must be a non-negative integer")
        for name in ("chunk_rows", "shard_records"):
            if getattr(self, name) < 1:
                raise InputError(f"{name}={getattr(self, name)}: must be a positive integer")
        if self.image_shape is not None and (
                len(self.image_shape) != 3 or min(self.image_shape) < 1):
            raise InputError(f"image_shape={self.image_shape}: must be three positive ints "
                             "(height, width, channels)")


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


class _Tally:
    """Streamed counts: rows read and dropped, kept labels, pixel bytes, sample images."""

    def __init__(self) -> None:
        self.rows_read = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.label_counts = np.zeros(MAX_CLASSES, np.int64)
        self.pixel_hist = np.zeros(256, np.int64)
        self.samples: list[np.ndarray] = []

    def add(self, raw_rows: int, images: np.ndarray, labels: np.ndarray,
            dropped: dict[str, int]) -> None:
        self.rows_read += raw_rows
        for reason, count in dropped.items():
            self.dropped[reason] += count
        self.label_counts += np.bincount(labels, minlength=MAX_CLASSES)
        self.pixel_hist += byte_histogram(images)
        room = SAMPLE_IMAGES - sum(len(s) for s in self.samples)
        if room > 0 and len(images):
            self.samples.append(images[:room].copy())

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())


def byte_histogram(images: np.ndarray) -> np.ndarray:
    """Counts of each byte value 0..255 in a uint8 array (two bytes per bincount slot)."""
    flat = np.ascontiguousarray(images).reshape(-1)
    counts = np.bincount(flat[-1:], minlength=256) if len(flat) % 2 else np.zeros(256, np.int64)
    pairs = np.bincount(flat[:len(flat) - len(flat) % 2].view(np.uint16), minlength=65536)
    pairs = pairs.reshape(256, 256)
    return counts + pairs.sum(axis=0) + pairs.sum(axis=1)


def clean_chunk(name: str, chunk: RawChunk, max_value: float,
                shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Drop bad rows and quantize the rest.

    Returns:
        ``(images uint8 (n, H, W, C) with byte b meaning b/255, labels int64, dropped)``,
        where ``dropped`` counts rows per reason: missing values, a negative or
        non-integer label, pixels outside ``[0, max_value]``.

    """
    pixels, labels = chunk.pixels, chunk.labels
    integers = np.issubdtype(pixels.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)
    if integers and max_value == 255:  # nothing missing, no fractions: no float passes
        bad_label = labels < 0
        out_of_range = np.zeros(len(labels), bool)
        if pixels.dtype != np.uint8 and len(labels):
            out_of_range = ~bad_label & ((pixels.min(axis=1) < 0) | (pixels.max(axis=1) > 255))
        keep = ~(bad_label | out_of_range)
        dropped = {"missing": 0, "bad_label": int(bad_label.sum()),
                   "out_of_range": int(out_of_range.sum())}
        images = pixels.astype(np.uint8, copy=False)[keep]  # dropped rows may wrap: unused
    else:
        px = pixels.astype(np.float64, copy=False)
        lab = labels.astype(np.float64, copy=False)
        missing = ~np.isfinite(lab) | ~np.isfinite(px).all(axis=1)
        with np.errstate(invalid="ignore"):
            bad_label = ~missing & ((lab < 0) | (lab != np.floor(lab)))
            out_of_range = ~missing & ~bad_label & ((px < 0) | (px > max_value)).any(axis=1)
        keep = ~(missing | bad_label | out_of_range)
        dropped = {"missing": int(missing.sum()), "bad_label": int(bad_label.sum()),
                   "out_of_range": int(out_of_range.sum())}
        images = to_uint8(px[keep] / max_value)
    labels = labels[keep].astype(np.int64)
    if len(labels) and labels.max() >= MAX_CLASSES:
        raise InputError(f"{name}: label {labels.max()} is above {MAX_CLASSES - 1}; labels "
                         f"must be class numbers 0..{MAX_CLASSES - 1}")
    return images.reshape(len(labels), *shape), labels, dropped


def _check_outputs(*uris: str) -> None:
    for uri in uris:
        if storage.is_gcs(uri):
            raise InputError(f"{uri}: outputs must be local folders (a KFP artifact's .path)")
    if len({os.path.abspath(u) for u in uris}) != len(uris):
        raise InputError(f"train/val/test outputs must be three different folders, got {uris}")


def _stream(source: Source, splitter: StratifiedSplitter,
            test_writer: DatasetWriter) -> _Tally:
    tally, last_report = _Tally(), time.monotonic()
    print(f"preprocess: reading {source.name} (images {source.image_shape})", flush=True)
    for chunk in source.chunks():
        images, labels, dropped = clean_chunk(source.name, chunk, source.max_value,
                                              source.image_shape)
        tally.add(len(chunk.labels), images, labels, dropped)
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


def _check_tally(name: str, tally: _Tally) -> int:
    """Validate what was read; return the number of classes (max label + 1)."""
    if tally.rows_read == 0:
        raise InputError(f"{name}: the table has no rows; give a table with labelled images")
    present = np.flatnonzero(tally.label_counts)
    if len(present) == 0:
        raise InputError(f"{name}: all {tally.rows_read} rows were dropped ({tally.dropped}); "
                         "fix missing values, labels and pixel ranges")
    if len(present) < 2:
        raise InputError(f"{name}: only class {present[0]} is present; classification needs "
                         "at least 2 classes")
    return int(present[-1]) + 1


def build_stats(data_uri: str, config: PreprocessConfig, source: Source, tally: _Tally,
                infos: dict[str, DatasetInfo]) -> dict:
    """Collect the JSON-able statistics of a run (no timings, so equal runs compare equal)."""
    return {
        "source": data_uri,
        "image_shape": list(source.image_shape),
        "num_classes": infos["train"].num_classes,
        "rows_read": tally.rows_read,
        "rows_dropped": tally.rows_dropped,
        "rows_kept": tally.rows_read - tally.rows_dropped,
        "dropped": dict(tally.dropped),
        "splits": {s: {"num_examples": infos[s].num_examples,
                       "class_counts": list(infos[s].class_counts)} for s in SPLITS},
        "pixels": pixel_stats(tally.pixel_hist),
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
    with open_source(data_uri, config.chunk_rows, config.image_shape) as source, \
            contextlib.ExitStack() as stack:
        roots = {s: stack.enter_context(storage.atomic_dir(uris[s])) for s in SPLITS}
        writers = {s: DatasetWriter(roots[s], source.image_shape, MAX_CLASSES,
                                    config.shard_records) for s in SPLITS}
        test_fraction = 0.0 if source.has_test_split else config.test_fraction
        splitter = StratifiedSplitter(writers, config.val_fraction, test_fraction, config.seed)
        tally = _stream(source, splitter, writers["test"])
        num_classes = _check_tally(data_uri, tally)
        infos = {s: finish_writer(writers[s], num_classes) for s in SPLITS}
        if infos["train"].num_examples == 0:
            raise InputError(f"{data_uri}: no training rows left after the split; "
                             "give more rows or lower val_fraction/test_fraction")
        stats = build_stats(data_uri, config, source, tally, infos)
        with open(os.path.join(roots["train"], STATS_FILE), "w") as handle:
            handle.write(json.dumps(stats, indent=2, sort_keys=True) + "\n")
        print(f"preprocess: kept {stats['rows_kept']} of {tally.rows_read} rows, dropped "
              f"{tally.rows_dropped} ({tally.dropped}); split "
              f"{ {s: infos[s].num_examples for s in SPLITS} }", flush=True)
        if log_dir:
            log_summary(log_dir, stats, tally.pixel_hist, tally.samples)
    return PreprocessResult(infos["train"], infos["val"], infos["test"], stats,
                            flat_metrics(stats))
