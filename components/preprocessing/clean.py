"""Row cleaning for preprocess: drop bad rows, quantize pixels to bytes, tally what was seen.

:func:`clean_chunk` turns one :class:`~.source.RawChunk` into uint8
images (byte b meaning b/255) and int64 labels, counting the rows it dropped per reason;
:class:`RowTally` sums those counts, the kept labels, a pixel-byte histogram and a few
sample images over all chunks. Sums are exact integers, so they do not depend on chunking.
"""

from __future__ import annotations

import numpy as np

from tbpipe.components.common.dataset import MAX_CLASSES, to_uint8
from tbpipe.components.common.errors import InputError
from tbpipe.components.preprocessing.source import RawChunk
from tbpipe.components.preprocessing.summary import SAMPLE_IMAGES

DROP_REASONS = ("missing", "bad_label", "out_of_range")


class RowTally:
    """Streamed counts: rows read and dropped, kept labels, pixel bytes, sample images."""

    def __init__(self) -> None:
        self.rows_read = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.label_counts = np.zeros(MAX_CLASSES, np.int64)
        self.pixel_hist = np.zeros(256, np.int64)
        self.samples: list[np.ndarray] = []

    def add(self, raw_rows: int, images: np.ndarray, labels: np.ndarray,
            dropped: dict[str, int]) -> None:
        """Count one cleaned chunk of ``raw_rows`` rows; keep images until enough samples."""
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
        """Rows dropped for any reason so far."""
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
        images, keep, dropped = _clean_byte_rows(pixels, labels)
    else:
        images, keep, dropped = _clean_float_rows(pixels, labels, max_value)
    labels = labels[keep].astype(np.int64)
    if len(labels) and labels.max() >= MAX_CLASSES:
        raise InputError(f"{name}: label {labels.max()} is above {MAX_CLASSES - 1}; labels "
                         f"must be class numbers 0..{MAX_CLASSES - 1}")
    return images.reshape(len(labels), *shape), labels, dropped


def _clean_byte_rows(pixels: np.ndarray, labels: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Integer pixels on a 0..255 scale: ``(kept images uint8, keep mask, dropped)``."""
    bad_label = labels < 0
    out_of_range = np.zeros(len(labels), bool)
    if pixels.dtype != np.uint8 and len(labels):
        out_of_range = ~bad_label & ((pixels.min(axis=1) < 0) | (pixels.max(axis=1) > 255))
    keep = ~(bad_label | out_of_range)
    dropped = {"missing": 0, "bad_label": int(bad_label.sum()),
               "out_of_range": int(out_of_range.sum())}
    return pixels.astype(np.uint8, copy=False)[keep], keep, dropped  # dropped rows may wrap


def _clean_float_rows(pixels: np.ndarray, labels: np.ndarray, max_value: float
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Any other pixels or labels: ``(kept images scaled to uint8, keep mask, dropped)``."""
    px = pixels.astype(np.float64, copy=False)
    lab = labels.astype(np.float64, copy=False)
    missing = ~np.isfinite(lab) | ~np.isfinite(px).all(axis=1)
    with np.errstate(invalid="ignore"):
        bad_label = ~missing & ((lab < 0) | (lab != np.floor(lab)))
        out_of_range = ~missing & ~bad_label & ((px < 0) | (px > max_value)).any(axis=1)
    keep = ~(missing | bad_label | out_of_range)
    dropped = {"missing": int(missing.sum()), "bad_label": int(bad_label.sum()),
               "out_of_range": int(out_of_range.sum())}
    return to_uint8(px[keep] / max_value), keep, dropped
