"""MNIST IDX files: the header parsed with numpy, validated, records streamed in chunks.

An IDX file is a big-endian header (magic ``0x0000080N`` for N dimensions of unsigned
bytes, then N uint32 sizes) followed by the bytes; ``.gz`` files are read through gzip.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Callable, Iterator

import numpy as np

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.limits import MAX_IMAGE_PIXELS
from tbpipe.components.common.regular_files import check_regular
from tbpipe.components.preprocessing.source import FORMATS_HINT, RawChunk, Source

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
CHUNK_BYTES = 64 << 20  # at most this many image bytes are read at a time
READ_PIECE = 1 << 20  # bytes asked of a file at once: a short stream never costs more
GZIP_MAX_RATIO = 1032  # deflate expands at most ~1032:1; a header claiming more is wrong


def _idx_file(folder: str, prefix: str, kind: str) -> str | None:
    dims = "idx3" if kind == "images" else "idx1"
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            path = os.path.join(folder, f"{prefix}-{kind}{sep}{dims}-ubyte{suffix}")
            if os.path.lexists(path):
                check_regular(path, path)
                if os.path.isfile(path):
                    return path
    return None


def _open_idx(path: str):  # noqa: ANN202 - a binary file object
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115


def read_idx_header(path: str, magic: int) -> tuple[int, ...]:
    """Validate an IDX file's magic number and return its big-endian dimensions."""
    ndim = magic & 0xFF
    try:
        with _open_idx(path) as handle:
            head = handle.read(4 + 4 * ndim)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read IDX file ({exc}); re-download it") from exc
    if len(head) < 4 + 4 * ndim:
        raise InputError(f"{path}: too short for an IDX header; re-download it")
    found = int.from_bytes(head[:4], "big")
    if found != magic:
        what = "images" if magic == IDX_IMAGES_MAGIC else "labels"
        raise InputError(f"{path}: IDX magic 0x{found:08x}, expected 0x{magic:08x} "
                         f"(an {what} file); check the file name and content")
    dims = tuple(int(d) for d in np.frombuffer(head[4:], dtype=">u4"))
    _check_claim(path, dims, len(head))
    return dims


def _check_claim(path: str, dims: tuple[int, ...], head: int) -> None:
    """Hold the sizes an IDX header claims to the file's real size, before any allocation.

    A raw file must be exactly header + data; a ``.gz`` file cannot hold more than
    GZIP_MAX_RATIO times its size (its exact length is checked while reading).
    """
    if len(dims) == 3 and (dims[1] * dims[2] == 0 or dims[1] * dims[2] > MAX_IMAGE_PIXELS):
        raise InputError(f"{path}: the header says images of {dims[1]}x{dims[2]} pixels, "
                         f"not 1..{MAX_IMAGE_PIXELS} pixels; the file is damaged, re-download it")
    expected = head + math.prod(dims)
    size = os.path.getsize(path)
    if not path.endswith(".gz"):
        if size != expected:
            raise InputError(f"{path}: {size} bytes but the header says "
                             f"{dims} ({expected} bytes); the file is truncated or damaged")
    elif expected > size * GZIP_MAX_RATIO + 1024:
        raise InputError(f"{path}: the header says {dims} ({expected} bytes) but {size} "
                         "compressed bytes cannot hold that much; the file is truncated or "
                         "damaged, re-download it")


def _read_exact(handle, path: str, size: int) -> bytes:  # noqa: ANN001
    """Read ``size`` bytes in pieces, so a stream shorter than its header costs no more."""
    data = bytearray()
    try:
        while len(data) < size:
            piece = handle.read(min(READ_PIECE, size - len(data)))
            if not piece:
                break
            data += piece
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read IDX data ({exc}); re-download it") from exc
    if len(data) != size:
        raise InputError(f"{path}: ends early ({len(data)} of {size} bytes left to read); "
                         "the file is truncated, re-download it")
    return data


def _idx_pair(images: str, labels: str, chunk_rows: int,
              split: str | None) -> tuple[tuple[int, int], Callable[[], Iterator[RawChunk]]]:
    n, rows, cols = read_idx_header(images, IDX_IMAGES_MAGIC)
    (n_labels,) = read_idx_header(labels, IDX_LABELS_MAGIC)
    if n != n_labels:
        raise InputError(f"{images}: {n} images but {labels} has {n_labels} labels; "
                         "use matching IDX files")
    chunk_rows = max(1, min(chunk_rows, CHUNK_BYTES // (rows * cols)))

    def chunks() -> Iterator[RawChunk]:
        with _open_idx(images) as img, _open_idx(labels) as lab:
            img.read(16)
            lab.read(8)
            for start in range(0, n, chunk_rows):
                m = min(chunk_rows, n - start)
                pixels = np.frombuffer(_read_exact(img, images, m * rows * cols), np.uint8)
                yield RawChunk(pixels.reshape(m, rows * cols),
                               np.frombuffer(_read_exact(lab, labels, m), np.uint8), split)
            for path, handle in ((images, img), (labels, lab)):
                try:
                    extra = handle.read(1)
                except (OSError, EOFError) as exc:
                    raise InputError(f"{path}: cannot read IDX data ({exc}); "
                                     "re-download it") from exc
                if extra:
                    raise InputError(f"{path}: data after the {n} records the header "
                                     "promises; the file is damaged, re-download it")

    return (rows, cols), chunks


def idx_source(name: str, folder: str, chunk_rows: int) -> Source:
    """Open a folder of MNIST IDX files: ``train-*`` required, ``t10k-*`` kept as test set."""
    found = {(p, k): _idx_file(folder, p, k)
             for p in ("train", "t10k") for k in ("images", "labels")}
    if not found["train", "images"] or not found["train", "labels"]:
        raise InputError(f"{name}: folder without train-images-idx3-ubyte and "
                         f"train-labels-idx1-ubyte (raw or .gz); {FORMATS_HINT}")
    shape, train_chunks = _idx_pair(found["train", "images"], found["train", "labels"],
                                    chunk_rows, None)
    test_images, test_labels = found["t10k", "images"], found["t10k", "labels"]
    if bool(test_images) != bool(test_labels):
        missing = "t10k-labels-idx1-ubyte" if test_images else "t10k-images-idx3-ubyte"
        raise InputError(f"{name}: {missing} is missing next to its t10k partner; "
                         "add it or remove both t10k files")
    parts = [train_chunks]
    if test_images:
        test_shape, test_chunks = _idx_pair(test_images, test_labels, chunk_rows, "test")
        if test_shape != shape:
            raise InputError(f"{test_images}: images are {test_shape}, train images are "
                             f"{shape}; use files from the same data set")
        parts.append(test_chunks)

    def chunks() -> Iterator[RawChunk]:
        for part in parts:
            yield from part()

    return Source(name, (*shape, 1), 255.0, chunks, has_test_split=len(parts) == 2)
