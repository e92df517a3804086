"""What a reader yields: raw rows in chunks (:class:`RawChunk`) from an opened :class:`Source`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

FORMATS_HINT = ("use a .csv, .csv.gz, .parquet or .pq table, a folder of MNIST IDX files, "
                "builtin:digits or builtin:mnist")


@dataclasses.dataclass(frozen=True)
class RawChunk:
    """Rows as read: pixels ``(n, H*W*C)`` and labels ``(n,)``, before any cleaning.

    ``split`` is ``"test"`` when the source fixes the split (MNIST t10k), else ``None``.
    """

    pixels: np.ndarray
    labels: np.ndarray
    split: str | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """An opened input: its image shape, value range, and a chunk iterator factory."""

    name: str
    image_shape: tuple[int, int, int]
    max_value: float
    chunks: Callable[[], Iterator[RawChunk]]
    has_test_split: bool = False
