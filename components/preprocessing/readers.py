"""Input readers for the preprocess step: each yields raw rows one chunk at a time.

Sources: a CSV / Parquet table (``label`` column plus one column per pixel), a folder of
MNIST IDX files (raw or ``.gz``), ``builtin:digits`` (scikit-learn) and ``builtin:mnist``
(Keras download). Readers only parse; cleaning and scaling happen in :mod:`core`.
"""

from __future__ import annotations

import contextlib
import math
import os
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError
from tbpipe.components.preprocessing.idx import idx_source
from tbpipe.components.preprocessing.source import FORMATS_HINT, RawChunk, Source

LABEL = "label"
TABLE_SUFFIXES = {".csv": "csv", ".csv.gz": "csv", ".parquet": "parquet", ".pq": "parquet"}
@contextlib.contextmanager
def open_source(data_uri: str, chunk_rows: int,
                image_shape: tuple[int, int, int] | None = None) -> Iterator[Source]:
    """Open ``data_uri`` (local path, ``gs://`` URI or ``builtin:NAME``) as a :class:`Source`.

    gs:// inputs are downloaded to a temporary folder that lives as long as the block.
    """
    if data_uri.startswith("builtin:"):
        yield builtin_source(data_uri, chunk_rows)
        return
    if not storage.is_remote(data_uri) and not os.path.exists(data_uri):
        raise InputError(f"{data_uri}: no such file or folder; check the data path")
    with storage.local_input(data_uri) as local:
        if os.path.isdir(local):
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


def table_shape(name: str, pixel_count: int,
                image_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """Return the image shape of ``pixel_count`` pixel columns (square, 1 channel, unless given)."""
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


def _pixel_columns(name: str, columns: list[str]) -> list[str]:
    if LABEL not in columns:
        raise InputError(f"{name}: no '{LABEL}' column; the table needs a '{LABEL}' column "
                         "and one column per pixel (label,pixel0,...)")
    return [c for c in columns if c != LABEL]


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


def csv_source(name: str, path: str, chunk_rows: int,
               image_shape: tuple[int, int, int] | None) -> Source:
    """Open a CSV table (optionally gzip-compressed), read ``chunk_rows`` rows at a time."""
    import pandas as pd

    try:
        columns = list(pd.read_csv(path, nrows=0).columns)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError,
            OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{name}: not a readable CSV table ({exc}); "
                         "write it as label,pixel0,... with a header row") from exc
    pixel_columns = _pixel_columns(name, columns)
    shape = table_shape(name, len(pixel_columns), image_shape)

    def chunks() -> Iterator[RawChunk]:
        try:
            for frame in pd.read_csv(path, chunksize=chunk_rows):
                if len(frame):
                    yield _frame_chunk(name, frame, pixel_columns)
        except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError,
                zlib.error) as exc:
            raise InputError(f"{name}: malformed CSV ({str(exc).strip()[:120]}); "
                             "fix the file") from exc

    return Source(name, shape, 255.0, chunks)


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
    pixel_columns = _pixel_columns(name, list(schema.names))
    for field in schema:
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)):
            raise InputError(f"{name}: column '{field.name}' has type {field.type}, not a "
                             "number; labels and pixels must be numeric")
    shape = table_shape(name, len(pixel_columns), image_shape)

    def chunks() -> Iterator[RawChunk]:
        # One reader per row group: one reader over the whole file keeps memory it decoded
        # (pyarrow 26: +190 MB over 1M rows), this one stays flat (docs/performance.md).
        for group in range(table.num_row_groups):
            for batch in table.iter_batches(batch_size=chunk_rows, row_groups=[group]):
                if batch.num_rows:
                    yield (_small_int_chunk(batch, pixel_columns)
                           or _frame_chunk(name, batch.to_pandas(), pixel_columns))

    return Source(name, shape, 255.0, chunks)


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
