"""Input readers for the preprocess step: each yields raw rows one chunk at a time.

Sources: a CSV / Parquet table (``label`` column plus one column per pixel), a folder of
MNIST IDX files (raw or ``.gz``), ``builtin:digits`` (scikit-learn) and ``builtin:mnist``
(Keras download). Readers only parse; cleaning and scaling happen in :mod:`core`.

Inputs are bounded: only regular files and folders are opened
(:func:`~tbpipe.components.common.regular_files.check_regular`), a CSV line may hold at
most ``FIELD_BYTES`` per column (:class:`_LineGuard`), and IDX headers are held to the
file's size (:mod:`.idx`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import re
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.limits import MAX_IMAGE_PIXELS
from tbpipe.components.common.regular_files import check_regular
from tbpipe.components.preprocessing.idx import CHUNK_BYTES, idx_source
from tbpipe.components.preprocessing.images import image_folder_source, is_image_folder
from tbpipe.components.preprocessing.source import FORMATS_HINT, RawChunk, Source

LABEL = "label"
TABLE_SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
PIXEL_NAME = re.compile(r"pixel(\d+)")
HEADER_LINE_BYTES = 4 << 20  # a header line longer than this is not a table's header
FIELD_BYTES = 64  # generous room per CSV field: "0.12345678901234567" is 19 bytes
MIN_LINE_BYTES = 64 << 10  # a data line may always be this long
READ_BYTES = 256 << 10  # bytes handed to the CSV parser at a time


@contextlib.contextmanager
def open_source(data_uri: str, chunk_rows: int,
                image_shape: tuple[int, int, int] | None = None,
                image_size: tuple[int, int] | None = None,
                channels: int = 0) -> Iterator[Source]:
    """Open ``data_uri`` (local path, ``gs://`` URI or ``builtin:NAME``) as a :class:`Source`.

    gs:// inputs are downloaded to a temporary folder that lives as long as the block.
    ``image_size`` (height, width) and ``channels`` apply to image folders
    (:mod:`.images`; None and 0 mean what the files are).
    """
    if data_uri.startswith("builtin:"):
        yield builtin_source(data_uri, chunk_rows)
        return
    if not storage.is_remote(data_uri):
        if not os.path.exists(data_uri):
            raise InputError(f"{data_uri}: no such file or folder; check the data path")
        check_regular(data_uri, data_uri)
    with storage.local_input(data_uri) as local:
        if os.path.isdir(local):
            if is_image_folder(local):
                yield image_folder_source(data_uri, local, chunk_rows, image_size, channels)
            else:
                yield idx_source(data_uri, local, chunk_rows)
            return
        kind = table_kind(data_uri)
        reader = csv_source if kind == "csv" else parquet_source
        yield reader(data_uri, local, chunk_rows, image_shape)


def table_kind(name: str) -> str:
    """``csv`` or ``parquet`` from the file name's extension; InputError otherwise."""
    lower = name.lower()
    for suffix, kind in TABLE_SUFFIXES.items():
        if lower.endswith(suffix):
            return kind
    raise InputError(f"{name}: unknown data format; {FORMATS_HINT}")


def rows_per_chunk(chunk_rows: int, pixel_count: int) -> int:
    """At most ``chunk_rows``, and few enough that a chunk's float64 pixels fit CHUNK_BYTES.

    A wide table (64x64 pixels: 4096 columns) would otherwise hold chunk_rows x 4096 x 8
    bytes at once, several times over while pandas converts it (10 000 rows: 330 MB).
    """
    return max(1, min(chunk_rows, CHUNK_BYTES // (8 * max(1, pixel_count))))


def table_shape(name: str, pixel_count: int,
                image_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """Return the image shape of ``pixel_count`` pixel columns (square, 1 channel, unless given)."""
    if pixel_count > MAX_IMAGE_PIXELS:
        raise InputError(f"{name}: {pixel_count} pixel columns, more than {MAX_IMAGE_PIXELS} "
                         "pixels an image may have; check the table")
    if image_shape is not None:
        if math.prod(image_shape) != pixel_count:
            raise InputError(f"{name}: {pixel_count} pixel columns do not fit image_shape "
                             f"{tuple(image_shape)}; fix image_shape or the table")
        return tuple(int(d) for d in image_shape)  # type: ignore[return-value]
    side = math.isqrt(pixel_count)
    if pixel_count == 0 or side * side != pixel_count:
        raise InputError(f"{name}: {pixel_count} pixel columns is not a square image; "
                         "pass image_shape (height, width, channels)")
    return side, side, 1


def find_pixel_columns(name: str, columns: list[str]) -> list[str]:
    """The pixel columns of a table, in pixel order.

    Columns named ``pixel0..pixelN`` are matched by their number, in any column order, and
    other columns are ignored; a table without such names uses every non-label column in
    file order.
    """
    if LABEL not in columns:
        raise InputError(f"{name}: no '{LABEL}' column; the table needs a '{LABEL}' column "
                         "and one column per pixel (label,pixel0,...)")
    if columns.count(LABEL) > 1:
        raise InputError(f"{name}: {columns.count(LABEL)} '{LABEL}' columns; keep one")
    numbered: dict[int, str] = {}
    for column in columns:
        match = PIXEL_NAME.fullmatch(str(column))
        if match:
            number = int(match.group(1))
            if number in numbered or str(number) != match.group(1):
                raise InputError(f"{name}: pixel column '{column}' repeats pixel{number}; "
                                 "name each pixel column once, pixel0..pixelN")
            numbered[number] = column
    if not numbered:
        return [c for c in columns if c != LABEL]
    missing = sorted(set(range(max(numbered) + 1)) - set(numbered))
    if missing:
        raise InputError(f"{name}: pixel columns go up to pixel{max(numbered)} but "
                         f"pixel{missing[0]} is missing ({len(missing)} missing); "
                         "name the pixel columns pixel0..pixelN without gaps")
    return [numbered[i] for i in range(len(numbered))]


def _check_numeric(name: str, frame) -> None:  # noqa: ANN001 - pandas.DataFrame
    import pandas as pd

    for column in frame.columns:
        dtype = frame[column].dtype
        if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
            bad = pd.to_numeric(frame[column], errors="coerce").isna() & frame[column].notna()
            example = frame[column][bad].iloc[0] if bad.any() else dtype
            raise InputError(f"{name}: column '{column}' is not numeric (e.g. {example!r}); "
                             "labels and pixels must be numbers")


def _frame_chunk(name: str, frame, pixel_columns: list[str]) -> RawChunk:  # noqa: ANN001
    _check_numeric(name, frame)
    if all(isinstance(dtype, np.dtype) and dtype.kind in "iu" for dtype in frame.dtypes):
        # NumPy integers cannot be missing: keep them integers (cleaned without float passes).
        return RawChunk(frame[pixel_columns].to_numpy(dtype=np.int64),
                        frame[LABEL].to_numpy(dtype=np.int64))
    pixels = frame[pixel_columns].to_numpy(dtype=np.float64, na_value=np.nan)
    labels = frame[LABEL].to_numpy(dtype=np.float64, na_value=np.nan)
    return RawChunk(pixels, labels)


class _LineGuard(io.RawIOBase):
    """A binary stream that fails as soon as one line grows past ``limit`` bytes.

    The CSV parser holds a whole line in memory; this bounds it. Reads are at most
    ``limit`` bytes, so a line inside one read is short enough, and only the line running
    across reads needs counting: two finds per read, no Python loop over lines.
    """

    def __init__(self, name: str, raw, limit: int, why: str) -> None:  # noqa: ANN001
        super().__init__()
        self.name, self.raw, self.limit, self.why = name, raw, limit, why
        self.run = 0  # bytes of the current line read so far
        self.lines = 0  # line ends seen before the current line

    def readable(self) -> bool:
        """A guard is read only."""
        return True

    def readinto(self, buffer) -> int:  # noqa: ANN001 - a writable buffer
        """Read the next piece into ``buffer``; InputError when a line gets too long."""
        view = memoryview(buffer).cast("B")
        data = self.raw.read(min(len(view), READ_BYTES, self.limit))
        first = data.find(b"\n")
        if first < 0:
            self.run += len(data)
        else:
            self._check(self.run + first)
            self.lines += data.count(b"\n")
            self.run = len(data) - data.rfind(b"\n") - 1
        self._check(self.run)
        view[:len(data)] = data
        return len(data)

    def _check(self, length: int) -> None:
        if length > self.limit:
            raise InputError(f"{self.name}: line {self.lines + 1} is longer than {self.limit} "
                             f"bytes ({self.why}); the file has lost its line ends or is not "
                             "a table of numbers, fix it")


def _open_csv(path: str):  # noqa: ANN202 - a binary file object
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")  # noqa: SIM115


def _read_header(name: str, path: str) -> bytes:
    """The first line of a CSV file, read in bounded pieces (at most HEADER_LINE_BYTES)."""
    head = b""
    with _open_csv(path) as handle:
        while b"\n" not in head and len(head) <= HEADER_LINE_BYTES:
            piece = handle.read(READ_BYTES)
            if not piece:
                break
            head += piece
    end = head.find(b"\n")
    if end < 0 and len(head) > HEADER_LINE_BYTES or end > HEADER_LINE_BYTES:
        raise InputError(f"{name}: the header line is longer than {HEADER_LINE_BYTES} bytes; "
                         "the file has lost its line ends or is not a CSV table, fix it")
    return head if end < 0 else head[:end + 1]


def csv_source(name: str, path: str, chunk_rows: int,
               image_shape: tuple[int, int, int] | None) -> Source:
    """Open a CSV table (optionally gzip-compressed), read ``chunk_rows`` rows at a time.

    Memory stays bounded whatever the file holds: a line longer than
    ``FIELD_BYTES`` per column (at least ``MIN_LINE_BYTES``) fails with one line naming
    the file, before the parser holds it.
    """
    import pandas as pd

    errors = (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError,
              OSError, EOFError, zlib.error)
    try:
        header = _read_header(name, path)
        columns = list(pd.read_csv(io.BytesIO(header), nrows=0).columns)
    except errors as exc:
        raise InputError(f"{name}: not a readable CSV table ({exc}); "
                         "write it as label,pixel0,... with a header row") from exc
    pixel_columns = find_pixel_columns(name, columns)
    shape = table_shape(name, len(pixel_columns), image_shape)
    chunk_rows = rows_per_chunk(chunk_rows, len(pixel_columns))
    limit = max(MIN_LINE_BYTES, FIELD_BYTES * len(columns), len(header))
    why = f"{len(columns)} columns allow {limit} bytes a line"
    wanted = {LABEL, *pixel_columns}

    def chunks() -> Iterator[RawChunk]:
        try:
            with _open_csv(path) as raw, \
                    io.BufferedReader(_LineGuard(name, raw, limit, why), READ_BYTES) as handle:
                for frame in pd.read_csv(handle, chunksize=chunk_rows,
                                         usecols=lambda c: c in wanted):
                    if len(frame):
                        yield _frame_chunk(name, frame, pixel_columns)
        except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError,
                zlib.error) as exc:
            raise InputError(f"{name}: malformed CSV ({str(exc).strip()[:120]}); "
                             "fix the file") from exc

    return Source(name, shape, None, chunks, columns=tuple(pixel_columns))


def parquet_source(name: str, path: str, chunk_rows: int,
                   image_shape: tuple[int, int, int] | None) -> Source:
    """Open a Parquet table, read one record batch of ``chunk_rows`` rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{name}: not a readable Parquet file ({exc}); check the file") from exc
    schema = table.schema_arrow
    pixel_columns = find_pixel_columns(name, list(schema.names))
    wanted = {LABEL, *pixel_columns}
    for field in schema:
        if field.name not in wanted:
            continue
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
            raise InputError(f"{name}: column '{field.name}' has type {field.type}, not a "
                             "number; labels and pixels must be numeric")
    shape = table_shape(name, len(pixel_columns), image_shape)
    chunk_rows = rows_per_chunk(chunk_rows, len(pixel_columns))

    def chunks() -> Iterator[RawChunk]:
        # One reader per row group: one reader over the whole file keeps memory it decoded
        # (pyarrow 26: +190 MB over 1M rows), this one stays flat (docs/performance.md).
        for group in range(table.num_row_groups):
            for batch in table.iter_batches(batch_size=chunk_rows, row_groups=[group],
                                            columns=[LABEL, *pixel_columns]):
                if batch.num_rows:
                    yield (_small_int_chunk(batch, pixel_columns)
                           or _frame_chunk(name, batch.to_pandas(), pixel_columns))

    return Source(name, shape, None, chunks, columns=tuple(pixel_columns))


def _small_int_chunk(batch, pixel_columns: list[str]) -> RawChunk | None:  # noqa: ANN001
    """A record batch of null-free integer columns as int16 arrays, without pandas.

    About a quarter of the memory and time of the pandas path; None (use that path) when a
    column is not an integer, has nulls, or holds a value beyond int16.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = [batch.column(LABEL), *(batch.column(name) for name in pixel_columns)]
    for column in columns:
        if not pa.types.is_integer(column.type) or column.null_count:
            return None
        bounds = pc.min_max(column)
        if bounds["min"].as_py() < -(2**15) or bounds["max"].as_py() >= 2**15:
            return None
    pixels = np.empty((batch.num_rows, len(pixel_columns)), np.int16)
    for index, column in enumerate(columns[1:]):
        pixels[:, index] = column.to_numpy()
    return RawChunk(pixels, columns[0].to_numpy().astype(np.int64))


def _array_chunks(arrays: list[tuple[np.ndarray, np.ndarray, str | None]],
                  chunk_rows: int) -> Callable[[], Iterator[RawChunk]]:
    def chunks() -> Iterator[RawChunk]:
        for images, labels, split in arrays:
            flat = images.reshape(len(images), -1)
            for start in range(0, len(labels), chunk_rows):
                end = start + chunk_rows
                yield RawChunk(flat[start:end], labels[start:end], split)

    return chunks


def builtin_source(name: str, chunk_rows: int) -> Source:
    """``builtin:digits`` (scikit-learn, 8x8, 0..16) or ``builtin:mnist`` (Keras download)."""
    if name == "builtin:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return Source(name, (8, 8, 1), 16.0,
                      _array_chunks([(digits.data, digits.target, None)], chunk_rows))
    if name == "builtin:mnist":
        try:
            from keras.datasets import mnist

            (x_train, y_train), (x_test, y_test) = mnist.load_data()
        except Exception as exc:  # noqa: BLE001 - any download failure means the same thing
            raise InputError(f"{name}: download failed ({type(exc).__name__}); builtin:mnist "
                             "needs network access, use builtin:digits or a local folder of "
                             "MNIST IDX files instead") from exc
        arrays = [(x_train, y_train, None), (x_test, y_test, "test")]
        return Source(name, (28, 28, 1), 255.0, _array_chunks(arrays, chunk_rows),
                      has_test_split=True)
    raise InputError(f"{name}: unknown built-in data set; use builtin:digits or builtin:mnist")
