"""Row cleaning for preprocess: check labels and scale, drop bad rows, quantize, tally.

:func:`clean_chunk` refuses labels that are not class numbers (one line naming the value
and its row), reads pixels on the scale :class:`PixelScale` decides (0..255 or [0, 1]
for tables), and turns one :class:`~.source.RawChunk` into uint8
images (byte b meaning b/255) and int64 labels, counting the rows it dropped per reason;
:class:`RowTally` sums those counts, the kept labels, a pixel-byte histogram and a few
sample images over all chunks. Sums are exact integers, so they do not depend on chunking.
"""

from __future__ import annotations

import math

import numpy as np

from tbpipe.components.common.dataset import to_uint8
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.limits import MAX_CLASSES
from tbpipe.components.preprocessing.source import RawChunk
from tbpipe.components.preprocessing.summary import SAMPLE_IMAGES

DROP_REASONS = ("missing", "out_of_range")


class RowTally:
    """Streamed counts: rows read and dropped, kept labels, pixel bytes, sample images."""

    def __init__(self) -> None:
        self.rows_read = 0
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.label_counts = np.zeros(MAX_CLASSES, np.int64)
        self.read_label_counts = np.zeros(MAX_CLASSES, np.int64)  # before rows were dropped
        self.pixel_hist = np.zeros(256, np.int64)
        self.samples: list[np.ndarray] = []

    def add(self, raw_rows: int, images: np.ndarray, labels: np.ndarray,
            dropped: dict[str, int], read_labels: np.ndarray | None = None) -> None:
        """Count one cleaned chunk of ``raw_rows`` rows; keep images until enough samples.

        ``read_labels`` are the chunk's labels before rows were dropped (checked class
        numbers), so a class whose every row was dropped is still known.
        """
        self.rows_read += raw_rows
        if read_labels is not None and len(read_labels):
            self.read_label_counts += np.bincount(read_labels.astype(np.int64),
                                                  minlength=MAX_CLASSES)
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


class PixelScale:
    """The pixel value meaning full brightness: fixed by the source, or decided from the data.

    Tables hold pixels on 0..255 or, as many exports do, as floats in [0, 1]. The scale is
    decided on the whole pixel column set by the first chunk holding a value above 0: any
    value above 1 means 0..255, else [0, 1] (an all-zero chunk reads the same either way).
    Rows that contradict the decision fail with one line naming the value, row and column:
    a value above 1 in a [0, 1] table, or a row of fractions within [0, 1] in a 0..255 table
    (it would be quantized to 0 and 1). Also keeps the finite value range seen.
    """

    def __init__(self, name: str, fixed: float | None = None,
                 columns: tuple[str, ...] = ()) -> None:
        self.name, self.fixed, self.columns = name, fixed, columns
        self.value: float | None = fixed
        self.decided_by = 0  # rows read when the scale was decided from the values
        self.low, self.high = math.inf, -math.inf

    def describe(self) -> str:
        """How values were read, e.g. ``0..255 (byte = value)``, for the summary line."""
        value = self.value if self.value is not None else 255.0
        if value == 255:
            return "0..255 (byte = value)"
        if value == 1:
            return "[0, 1] (byte = round(value * 255))"
        return f"0..{value:g} (byte = round(value * 255 / {value:g}))"

    def range_seen(self) -> str:
        """The finite pixel values seen, ``low..high`` (``none`` before any)."""
        if self.high < self.low:
            return "none"
        return f"{_number(self.low)}..{_number(self.high)}"

    def observe(self, pixels: np.ndarray, first_row: int) -> float:
        """Update the range with one chunk (rows ``first_row + 1...``); return its scale."""
        if not pixels.size:
            return self.value if self.value is not None else 255.0
        if np.issubdtype(pixels.dtype, np.integer):
            low, high = float(pixels.min()), float(pixels.max())
        else:
            finite = np.isfinite(pixels)
            if not finite.any():
                return self.value if self.value is not None else 255.0
            with np.errstate(invalid="ignore"):
                low = float(np.min(pixels, where=finite, initial=np.inf))
                high = float(np.max(pixels, where=finite, initial=-np.inf))
        self.low, self.high = min(self.low, low), max(self.high, high)
        if self.fixed is not None:
            return self.fixed
        if self.value is None and high > 0:
            self.value = 255.0 if high > 1 else 1.0
            self.decided_by = first_row + len(pixels)
        if self.value == 1.0 and high > 1:
            row, column = np.argwhere(pixels > 1)[0]
            raise InputError(
                f"{self.name}: pixel value {_number(pixels[row, column])} "
                f"{self._where(first_row + row, column)} is above 1, but rows up to "
                f"{self.decided_by} were all in [0, 1], so the table reads as [0, 1]-scaled; "
                "use one scale (0..255 or [0, 1]) for the whole table")
        if self.value == 255.0 and not np.issubdtype(pixels.dtype, np.integer):
            self._refuse_unit_rows(pixels, first_row)
        return self.value if self.value is not None else 255.0

    def _refuse_unit_rows(self, pixels: np.ndarray, first_row: int) -> None:
        """In a 0..255 table: fail on a row of fractions all within [0, 1]."""
        with np.errstate(invalid="ignore"):
            fraction = (pixels != np.floor(pixels)) & np.isfinite(pixels)
            rows = fraction.any(axis=1) & ~(pixels > 1).any(axis=1)
        if rows.any():
            row = int(np.flatnonzero(rows)[0])
            column = int(np.flatnonzero(fraction[row])[0])
            raise InputError(
                f"{self.name}: row {first_row + row + 1} holds only values in [0, 1] with "
                f"fractions (e.g. {_number(pixels[row, column])} in column "
                f"'{self._column(column)}'), but the table reads as 0..255 (values up to "
                f"{_number(self.high)}); use one scale (0..255 or [0, 1]) for the whole table")

    def _column(self, index: int) -> str:
        return self.columns[index] if index < len(self.columns) else f"pixel{index}"

    def _where(self, row: int, column: int) -> str:
        return f"(row {row + 1}, column '{self._column(int(column))}')"


def _number(value: object) -> str:
    """A value as a user wrote it: ``3``, ``3.5``, ``-1``, ``nan``."""
    number = float(value)
    return str(int(number)) if number.is_integer() else f"{number:g}"


def check_labels(name: str, labels: np.ndarray, first_row: int) -> None:
    """Refuse a label that is not a class number 0..MAX_CLASSES-1, naming it and its row.

    A label of 3.5, -1 or NaN means the table is not what it seems; it is never dropped
    silently nor trained on.
    """
    if not len(labels):
        return
    if np.issubdtype(labels.dtype, np.integer):
        bad = (labels < 0) | (labels >= MAX_CLASSES)
    else:
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(labels) | (labels < 0) | (labels != np.floor(labels)) | (
                labels >= MAX_CLASSES)
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    value = labels[row]
    where = f"(row {first_row + row + 1}, column 'label')"
    rule = f"labels must be class numbers 0..{MAX_CLASSES - 1}"
    if np.isfinite(value) and float(value).is_integer() and value >= MAX_CLASSES:
        raise InputError(f"{name}: label {_number(value)} is above {MAX_CLASSES - 1} {where}; "
                         f"{rule}")
    what = "missing" if not np.isfinite(value) else "not a class number"
    raise InputError(f"{name}: label {_number(value)} {where} is {what}; {rule}, fix or "
                     "remove the row")


def clean_chunk(name: str, chunk: RawChunk, scale: float | PixelScale,
                shape: tuple[int, int, int], first_row: int = 0
                ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Check labels and the pixel scale, drop bad rows and quantize the rest.

    Args:
        name: The input, for error lines.
        chunk: Raw rows.
        scale: The value meaning full brightness, or the :class:`PixelScale` deciding it.
        shape: Image shape of a row.
        first_row: Rows read before this chunk (error lines count rows from 1).

    Returns:
        ``(images uint8 (n, H, W, C) with byte b meaning b/255, labels int64, dropped)``,
        where ``dropped`` counts rows per reason: missing pixel values, pixels outside
        ``[0, scale]``.

    Raises:
        InputError: a label that is not a class number, or pixels contradicting the scale.

    """
    pixels, labels = chunk.pixels, chunk.labels
    check_labels(name, labels, first_row)
    if isinstance(scale, PixelScale):
        max_value = scale.observe(pixels, first_row)
    else:
        max_value = scale
    integers = np.issubdtype(pixels.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer)
    if integers and max_value == 255:  # nothing missing, no fractions: no float passes
        images, keep, dropped = _clean_byte_rows(pixels, labels)
    else:
        images, keep, dropped = _clean_float_rows(pixels, max_value)
    labels = labels[keep].astype(np.int64)
    return images.reshape(len(labels), *shape), labels, dropped


def _clean_byte_rows(pixels: np.ndarray, labels: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Integer pixels on a 0..255 scale: ``(kept images uint8, keep mask, dropped)``."""
    out_of_range = np.zeros(len(labels), bool)
    if pixels.dtype != np.uint8 and len(labels):
        out_of_range = (pixels.min(axis=1) < 0) | (pixels.max(axis=1) > 255)
    keep = ~out_of_range
    dropped = {"missing": 0, "out_of_range": int(out_of_range.sum())}
    return pixels.astype(np.uint8, copy=False)[keep], keep, dropped  # dropped rows may wrap


def _clean_float_rows(pixels: np.ndarray, max_value: float
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Any other pixels: ``(kept images scaled to uint8, keep mask, dropped)``."""
    px = pixels.astype(np.float64, copy=False)
    missing = ~np.isfinite(px).all(axis=1)
    with np.errstate(invalid="ignore"):
        out_of_range = ~missing & ((px < 0) | (px > max_value)).any(axis=1)
    keep = ~(missing | out_of_range)
    dropped = {"missing": int(missing.sum()), "out_of_range": int(out_of_range.sum())}
    return to_uint8(px[keep] / max_value), keep, dropped
