"""Batch prediction: images in, their top-k classes out, streamed in fixed-size batches.

Images come from a folder (local, gs://, s3://: every PNG, JPEG, GIF, BMP, WebP or TIFF file
below it, in path order), a CSV or Parquet list (a ``path`` column of local paths, relative
to the list's folder, or gs:// / s3:// URIs), or one image file or object. They are read
(:func:`tbpipe.components.common.serving.read_image`: converted to the model's channels,
resized to its size) ``batch_size`` at a time by a few threads, predicted by the Model
folder's SavedModel (``serving_default``; its Keras file when it has none), and each batch's
rows are written before the next is read: memory is bounded by ``batch_size``, never by the
number of images. The table (Parquet or CSV) is written under a temporary name and renamed
(uploaded, for gs:// and s3://) only when complete, so a failed run leaves no table a later
step could take as whole.

A row: ``path``, ``class_1``, ``probability_1``, ... ``class_k``, ``probability_k`` (most
probable first), ``error`` (empty, or why the image has no prediction: unreadable, or a model
output that is not finite). The top-1 classes are counted into a histogram logged to
TensorBoard (``batch_predict/top1_class``, one bucket per class index) with a count per class
(``batch_predict/count/<class>``), the throughput (``batch_predict/images_per_s``) and a table
(``batch_predict/summary``), under ``{log_root}/{experiment}/{run}/batch-predict``.

A production folder (``--promote-to``, holding ``promotion.json``) as the model means the
version it serves now (:func:`serving_model`).
No kfp here; TensorFlow, PIL and pyarrow are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, os_errors
from tbpipe.components.prediction.config import BatchPredictConfig, BatchPredictResult

STEP = "batch-predict"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
LIST_SUFFIXES = (".csv", ".parquet")
_LIST_CHUNK = 10_000


def serving_model(uri: str) -> str:
    """The Model folder to predict with: ``uri``, or the version a production folder serves.

    A folder holding ``promotion.json`` (a ``--promote-to`` target) resolves to the version
    its pointer names (``{uri}/vN``, :func:`tbpipe.components.promotion.publish.current_model`).

    Raises:
        InputError: a production folder where nothing was promoted yet.

    """
    from tbpipe.components.promotion.publish import RECORD_FILE, current_model

    if not storage.exists(storage.join(uri.rstrip("/") or uri, RECORD_FILE)):
        return uri
    current = current_model(uri)
    if not current:
        raise InputError(f"{uri}: a production folder that serves no model yet (its "
                         f"{RECORD_FILE} names none); promote a model first or pass a Model "
                         "folder")
    return current


def iter_image_uris(source: str, path_column: str = "path") -> Iterator[str]:
    """The images ``source`` names, one URI at a time (see the module for what it may be).

    Raises:
        InputError: a folder without images, a list without ``path_column``, a source that
            does not exist.

    """
    lower = source.lower().rstrip("/")
    if lower.endswith(LIST_SUFFIXES):
        yield from _listed(source, path_column)
        return
    if storage.is_remote(source):
        if lower.endswith(IMAGE_SUFFIXES):
            yield source
            return
        yield from _folder(source.rstrip("/"))
        return
    if os.path.isdir(source):
        yield from _folder(source)
        return
    yield source  # a file: read_image names it if it is missing or not an image


def _folder(folder: str) -> Iterator[str]:
    found = 0
    for rel in storage.list_files(folder):
        if rel.lower().endswith(IMAGE_SUFFIXES):
            found += 1
            yield storage.join(folder, rel) if storage.is_remote(folder) else os.path.join(
                folder, rel)
    if not found:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this "
                         "folder; pass a folder of images, a CSV/Parquet list or image files")


def _listed(list_uri: str, column: str) -> Iterator[str]:
    """The ``column`` of a CSV or Parquet list, in chunks (relative paths: to its folder)."""
    import pyarrow as pa
    import pyarrow.csv as pv
    import pyarrow.parquet as pq

    base = "" if storage.is_remote(list_uri) else os.path.dirname(os.path.abspath(list_uri))
    missing = (f"{list_uri}: has no column {column!r}; name the image paths' column with "
               "path_column (--path-column)")
    with storage.local_input(list_uri) as local:
        if not os.path.isfile(local):
            raise InputError(f"{list_uri}: no such file; pass a CSV or Parquet list of images")
        try:
            if list_uri.lower().rstrip("/").endswith(".parquet"):
                reader = pq.ParquetFile(local)
                if column not in reader.schema_arrow.names:
                    raise InputError(missing)
                batches = reader.iter_batches(batch_size=_LIST_CHUNK, columns=[column])
            else:
                options = pv.ConvertOptions(include_columns=[column],
                                            column_types={column: pa.string()})
                batches = pv.open_csv(local, convert_options=options,
                                      read_options=pv.ReadOptions(block_size=1 << 20))
            for batch in batches:
                for value in batch.column(0).to_pylist():
                    if not value:
                        continue
                    remote = storage.is_remote(value)
                    yield value if remote or os.path.isabs(value) else os.path.join(base, value)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
            if column in str(exc) and "not" in str(exc).lower():
                raise InputError(missing) from exc
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InputError(f"{list_uri}: cannot read the list of images ({first}); pass a "
                             f"CSV or Parquet file with a {column!r} column") from exc


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_predictions(predictor, uris: Iterable[str],  # noqa: ANN001 - serving.Predictor
                     config: BatchPredictConfig) -> Iterator[list[dict]]:
    """Rows of predictions, one list per batch of ``config.batch_size`` images, in order.

    A row: ``{"path", "classes", "probabilities", "error"}`` (``classes`` most probable
    first, ``config.top_k`` of them; none and an ``error`` line when the image cannot be read
    or the model's output is not finite).
    """
    from tbpipe.components.common.serving import read_image

    names = predictor.class_names
    top = min(config.top_k, len(names))

    def read(uri: str) -> tuple[np.ndarray | None, str]:
        try:
            return read_image(uri, predictor.image_shape), ""
        except InputError as exc:
            return None, str(exc)

    with ThreadPoolExecutor(config.read_threads, thread_name_prefix="tbpipe-read") as pool:
        for chunk in _chunks(uris, config.batch_size):
            read_back = list(pool.map(read, chunk))
            good = [i for i, (pixels, _) in enumerate(read_back) if pixels is not None]
            probs = (predictor.predict(np.stack([read_back[i][0] for i in good]))
                     if good else np.empty((0, len(names))))
            by_index = dict(zip(good, probs, strict=True))
            rows = []
            for i, uri in enumerate(chunk):
                row = {"path": uri, "classes": [], "probabilities": [],
                       "error": read_back[i][1]}
                p = by_index.get(i)
                if p is not None and not np.isfinite(p).all():
                    row["error"] = (f"{uri}: the model's output is NaN or infinite; the model "
                                    "is broken (its training diverged?): retrain it")
                elif p is not None:
                    order = np.argsort(-p, kind="stable")[:top]
                    row["classes"] = [names[k] for k in order]
                    row["probabilities"] = [float(p[k]) for k in order]
                rows.append(row)
            yield rows


def table_columns(top: int) -> list[str]:
    """The columns of a predictions table: path, class_1, probability_1, ..., error."""
    pairs = [[f"class_{j}", f"probability_{j}"] for j in range(1, top + 1)]
    return ["path", *[c for pair in pairs for c in pair], "error"]


def flat_row(row: dict, top: int) -> list:
    """A row as :func:`table_columns` values (missing classes: "" and None)."""
    values: list = [row["path"]]
    for j in range(top):
        has = j < len(row["classes"])
        values += [row["classes"][j] if has else "", row["probabilities"][j] if has else None]
    return [*values, row["error"]]


class _CsvTable:
    def __init__(self, handle: io.TextIOBase, top: int) -> None:
        self.writer, self.top = csv.writer(handle), top
        self.writer.writerow(table_columns(top))

    def write(self, rows: Sequence[dict]) -> None:
        self.writer.writerows(flat_row(r, self.top) for r in rows)

    def close(self) -> None:
        return None


class _ParquetTable:
    def __init__(self, path: str, top: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.top = pa, top
        fields = [pa.field("path", pa.string())]
        for j in range(1, top + 1):
            fields += [pa.field(f"class_{j}", pa.string()),
                       pa.field(f"probability_{j}", pa.float32())]
        self.schema = pa.schema([*fields, pa.field("error", pa.string())])
        self.writer = pq.ParquetWriter(path, self.schema)

    def write(self, rows: Sequence[dict]) -> None:
        columns = list(zip(*(flat_row(r, self.top) for r in rows), strict=True))
        self.writer.write_table(self.pa.Table.from_arrays(
            [self.pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)],
            schema=self.schema))

    def close(self) -> None:
        self.writer.close()


@contextlib.contextmanager
def _table(output_uri: str, output_format: str, top: int) -> Iterator[_CsvTable | _ParquetTable]:
    """A table writer whose file becomes ``output_uri`` only if the block succeeds."""
    remote = storage.is_remote(output_uri)
    folder = tempfile.gettempdir() if remote else os.path.dirname(os.path.abspath(output_uri))
    with os_errors(output_uri):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(output_uri)}.", suffix=".partial",
                                   dir=folder)
    try:
        if output_format == "csv":
            with os.fdopen(fd, "w", newline="") as handle:
                table = _CsvTable(handle, top)
                yield table
        else:
            os.close(fd)
            table = _ParquetTable(tmp, top)
            try:
                yield table
            finally:
                table.close()
        if remote:
            storage.upload_file(tmp, output_uri)
        else:
            with os_errors(output_uri):
                os.replace(tmp, output_uri)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def batch_predict_images(model_uri: str, images_uri: str | Sequence[str], output_uri: str,
                         log_dir: str, config: BatchPredictConfig) -> BatchPredictResult:
    """Predict every image ``images_uri`` names into the table ``output_uri``; log to TensorBoard.

    Args:
        model_uri: A Model folder, or a production folder (its current version).
        images_uri: A folder, a CSV/Parquet list, an image (local, gs://, s3://), or several.
        output_uri: The predictions table (Parquet or CSV by ``config.output_format``).
        log_dir: ``{log_root}/{experiment}/{run}/batch-predict`` ("" logs nothing).
        config: The settings.

    Returns:
        How many images, how many unreadable, how fast, the top-1 class counts.

    Raises:
        InputError: a model or an image source that cannot be used (one line naming it).
        StorageError: the table or the logs cannot be written.

    """
    from tbpipe.components.common.serving import load_predictor

    model_uri = serving_model(model_uri)
    predictor = load_predictor(model_uri)
    names = predictor.class_names
    top = min(config.top_k, len(names))
    sources = [images_uri] if isinstance(images_uri, str) else list(images_uri)
    uris = (uri for source in sources for uri in iter_image_uris(source, config.path_column))
    counts = np.zeros(len(names), dtype=np.int64)
    index = {name: k for k, name in enumerate(names)}
    images = failed = 0
    start = time.monotonic()
    with _table(output_uri, config.output_format, top) as table:
        for rows in iter_predictions(predictor, uris, config):
            table.write(rows)
            for row in rows:
                images += 1
                if row["error"]:
                    failed += 1
                else:
                    counts[index[row["classes"][0]]] += 1
    seconds = time.monotonic() - start
    result = BatchPredictResult(images, failed, seconds,
                                {name: int(c) for name, c in zip(names, counts, strict=True)},
                                model_uri, output_uri)
    if log_dir:
        log_predictions(log_dir, result, names)
    return result


def log_predictions(log_dir: str, result: BatchPredictResult, names: Sequence[str]) -> None:
    """The top-1 class histogram, a count per class, the throughput and a summary table."""
    from tbpipe.components.common.tensorboard.writer import markdown_table, open_writer
    from tbpipe.components.evaluation.report import tag_names

    counts = np.array([result.class_counts[n] for n in names], dtype=np.float64)
    seen = np.flatnonzero(counts)
    k = np.arange(len(names), dtype=np.float64)
    with open_writer(log_dir) as writer:
        writer.add_histogram_raw(
            "batch_predict/top1_class", min=float(seen.min()) if seen.size else 0.0,
            max=float(seen.max()) if seen.size else 0.0, num=int(counts.sum()),
            sum=float((k * counts).sum()), sum_squares=float((k * k * counts).sum()),
            bucket_limits=(k + 0.5).tolist(), bucket_counts=counts.tolist(), global_step=0)
        for tag, name in zip(tag_names(names), names, strict=True):
            writer.add_scalar(f"batch_predict/count/{tag}", result.class_counts[name], 0)
        writer.add_scalar("batch_predict/images_per_s", result.images_per_s, 0)
        rows = [[name, result.class_counts[name]] for name in names]
        writer.add_text("batch_predict/summary", f"{result.line()}\n\n"
                        + markdown_table(["top-1 class", "images"], rows), 0)
