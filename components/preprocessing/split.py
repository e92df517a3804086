"""Streaming stratified split into train / val / test, independent of chunk boundaries."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

import numpy as np

from tbpipe.components.common.dataset import DatasetInfo, DatasetWriter

SPLITS = ("train", "val", "test")
BLOCK_ROWS = 128
_TRAIN, _VAL, _TEST = 0, 1, 2


def _rounded(value: float) -> int:
    return math.floor(value + 0.5)


class StratifiedSplitter:
    """Assigns rows to splits per class, in seeded blocks, writing each split as it goes.

    Each class's rows are cut into consecutive blocks of ``block_rows``. A block is assigned
    by a permutation seeded with ``(seed, class, block index)``; its split sizes carry the
    rounding remainders of earlier blocks, so every class ends with ``round(n * fraction)``
    rows in val and in test. Assignment depends only on a row's position among the rows of
    its class, never on where chunks end, so any chunk size writes the same bytes. Memory:
    at most ``block_rows - 1`` buffered rows per class.
    """

    def __init__(self, writers: dict[str, DatasetWriter], val_fraction: float,
                 test_fraction: float, seed: int, block_rows: int = BLOCK_ROWS) -> None:
        self._writers = [writers[s] for s in SPLITS]
        self._fractions = (val_fraction, test_fraction)
        self._seed = seed
        self._block_rows = block_rows
        self._buffers: dict[int, list[np.ndarray]] = defaultdict(list)
        self._seen: dict[int, int] = defaultdict(int)
        self._assigned: dict[int, list[int]] = defaultdict(lambda: [0, 0])

    def _buffered(self, label: int) -> int:
        return sum(len(part) for part in self._buffers[label])

    def add(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Take a chunk of clean rows (uint8 images, int labels) in input order."""
        events, tails = [], []
        for label in np.unique(labels).tolist():
            rows = np.flatnonzero(labels == label)
            need, start = self._block_rows - self._buffered(label), 0
            while len(rows) - start >= need:
                events.append((int(rows[start + need - 1]), label, rows[start:start + need]))
                start, need = start + need, self._block_rows
            if start < len(rows):
                tails.append((label, images[rows[start:]]))
        # Full blocks are written in the order their last row was read, then the
        # leftovers wait in the buffers for the next chunk.
        for _, label, rows in sorted(events, key=lambda event: event[0]):
            block = np.concatenate([*self._buffers.pop(label, []), images[rows]])
            self._assign(label, block)
        for label, rest in tails:
            self._buffers[label].append(rest)

    def finish(self) -> None:
        """Assign the last, partial block of every class."""
        for label in sorted(self._buffers):
            parts = self._buffers[label]
            if parts:
                self._assign(label, np.concatenate(parts))
        self._buffers.clear()

    def _assign(self, label: int, block: np.ndarray) -> None:
        n, seen = len(block), self._seen[label]
        total, assigned = seen + n, self._assigned[label]
        n_test = min(n, _rounded(total * self._fractions[1]) - assigned[1])
        n_val = min(n - n_test, _rounded(total * self._fractions[0]) - assigned[0])
        n_test, n_val = max(n_test, 0), max(n_val, 0)
        rng = np.random.default_rng([self._seed, label, seen // self._block_rows])
        order = rng.permutation(n)
        where = np.full(n, _TRAIN, np.int8)
        where[order[:n_test]] = _TEST
        where[order[n_test:n_test + n_val]] = _VAL
        for code, writer in enumerate(self._writers):
            chosen = block[where == code]
            writer.write(chosen, np.full(len(chosen), label, np.int64))
        self._seen[label] = total
        assigned[0] += n_val
        assigned[1] += n_test


def finish_writer(writer: DatasetWriter, num_classes: int,
                  class_names: tuple[str, ...] = ()) -> DatasetInfo:
    """Close a writer opened with room for every class and record the real classes.

    The number of classes (max label + 1) is known only after the whole table streamed
    through, so writers start with the format's maximum and the manifest is rewritten here,
    with ``class_names`` (default ``"0".."k-1"``).
    """
    names = tuple(class_names) or tuple(str(k) for k in range(num_classes))
    writer.class_names = names if num_classes == writer.num_classes else ()
    info = writer.close()
    if num_classes == info.num_classes:
        return info
    info = dataclasses.replace(info, num_classes=num_classes, class_names=names,
                               class_counts=info.class_counts[:num_classes])
    writer.write_manifest(info)
    return info
