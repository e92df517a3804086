"""What a reader yields: raw rows in chunks (:class:`RawChunk`) from an opened :class:`Source`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

FORMATS_HINT = ("use a .csv, .csv.gz, .parquet or .pq table, a folder of MNIST IDX files, "
                "a folder of image folders (one per class), builtin:digits or builtin:mnist")


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
    """An opened input: its image shape, value range, and a chunk iterator factory.

    ``max_value`` is the pixel value meaning full brightness when the format fixes it (255
    for IDX, 16 for builtin:digits); None for tables, whose scale (0..255 or [0, 1]) is
    decided from the values (:class:`~.clean.PixelScale`). ``columns`` names the pixel
    columns of a table, in pixel order, for error lines. ``class_names`` names the classes
    when the source knows them (image folders), label k being ``class_names[k]``; empty:
    ``"0".."k-1"``. ``counts`` holds what the reader counted while reading (an image
    folder's ``unreadable_files``), for the stats.
    """

    name: str
    image_shape: tuple[int, int, int]
    max_value: float | None
    chunks: Callable[[], Iterator[RawChunk]]
    has_test_split: bool = False
    columns: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
