"""The writer layer of tbpipe's TensorBoard logging: open, log, sync, close.

``open_writer(log_dir)`` is the one way steps get a writer. Local folders get a plain
tensorboardX ``SummaryWriter``; log dirs on a store (``gs://``, ``s3://``, ``az://``, any
scheme fsspec knows) get a writer whose events go to a local file and are published to it
(:mod:`tbpipe.components.common.tensorboard.sink`). Either way the writer is flushed and
closed when the ``with`` block ends, on success and on failure.

Both hand events to tensorboardX's writer thread through a thread queue, and
:func:`add_scalars` / :func:`add_histogram` only queue numbers for the writer thread to
encode (:mod:`tbpipe.components.common.tensorboard.fastpath`, the one module that touches
tensorboardX internals, with a public fallback; docs/performance.md).

Every write is checked: a write that fails on the writer thread (disk full, read-only file
system) is recorded there, and the block of :func:`open_writer` (or the next
:func:`sync_events`) ends with one StorageError line naming the log dir and the cause, so a
step never succeeds with fewer events than it logged.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping

import numpy as np

from tbpipe.components.common.errors import StorageError
from tbpipe.components.common.storage import is_remote
from tbpipe.components.common.tensorboard import fastpath

DEFAULT_FLUSH_SECS = 5


@contextlib.contextmanager
def open_writer(log_dir: str, flush_secs: int = DEFAULT_FLUSH_SECS,
                purge_step: int | None = None) -> Iterator:
    """Yield a tensorboardX ``SummaryWriter`` for ``log_dir``; always flushed and closed.

    Args:
        log_dir: A local folder or a store URI (``gs://``, ``s3://``, ``az://``...)
            (``{log_root}/{experiment}/{run}/{step}``).
        flush_secs: How often queued events reach the event file (and, on a store, storage).
        purge_step: On resume, the first step to keep: TensorBoard drops events logged at
            or after it by the interrupted attempt, so no step is shown twice.

    Raises:
        StorageError: ``log_dir`` cannot be made, an event could not be written, or (on a store)
            not every event could be published when the writer closed (checked when the
            block ends, unless it ends with an error of its own): one line naming
            ``log_dir`` and the cause, e.g. ``No space left on device``.

    """
    from tensorboardX import SummaryWriter

    if is_remote(log_dir):
        from tbpipe.components.common.tensorboard.sink import remote_writer

        with remote_writer(log_dir, flush_secs=flush_secs, purge_step=purge_step) as writer:
            fastpath.install(writer)
            yield writer
        error = fastpath.write_error(writer) or writer.write_error
        report = writer.report
        if error is None and report is not None and report.error:
            # the block succeeded, but not every event reached storage: no SUCCESS with less
            raise StorageError(f"{log_dir}: {report.unpublished_bytes} bytes of TensorBoard "
                               f"events could not be published ({report.error}); they are "
                               f"kept in {report.kept_dir}: retry the step when storage "
                               "answers")
    else:
        try:
            writer = SummaryWriter(logdir=log_dir, flush_secs=flush_secs, purge_step=purge_step)
        except OSError as exc:
            raise StorageError.from_os_error(log_dir, exc) from exc
        fastpath.install(writer)
        try:
            yield writer
        finally:
            error = close_writer(writer)
    if error is not None:
        raise events_error(log_dir, error)


def close_writer(writer) -> OSError | None:  # noqa: ANN001
    """Flush and close ``writer``; the first OSError met writing its events (None: none)."""
    error = None
    try:
        writer.flush()
        writer.close()
    except OSError as exc:
        error = exc
        fastpath.abandon(writer)
    return fastpath.write_error(writer) or error


def events_error(log_dir: str, exc: OSError) -> StorageError:
    """The one line for events that could not be written to ``log_dir``."""
    return StorageError.from_os_error(log_dir, exc, "cannot write TensorBoard events")


def sync_events(writer, timeout: float = 10.0) -> bool:
    """Put every event logged so far into the event file (and, on a store, publish it).

    tensorboardX queues events for a writer thread and ``flush()`` skips that queue, so a
    SIGKILL loses up to ``flush_secs`` of events. Called before a checkpoint is saved, this
    keeps a checkpoint from getting ahead of the logs: a run resumed from it shows no gap.
    Waits at most ``timeout`` seconds; returns whether everything was written (and published).

    Raises:
        StorageError: an event could not be written (disk full...): one line naming the log
            dir and the cause, so no checkpoint is saved past lost events.

    """
    stop_at = time.monotonic() + timeout
    written = fastpath.wait_written(writer, timeout)
    error = None
    try:
        writer.flush()
    except OSError as exc:
        error = exc
    error = fastpath.write_error(writer) or error
    if error is not None:
        raise events_error(getattr(writer, "log_uri", None) or writer.logdir, error)
    publisher = getattr(writer, "publisher", None)  # a store writer (sink)
    if publisher is not None:
        try:
            publisher.publish(max(stop_at - time.monotonic(), 0.0))
        except StorageError:
            return False
    return written


def log_hparams(writer, hparams: Mapping[str, object], metrics: Mapping[str, float],
                step: int | None = None) -> None:
    """Record hyper-parameters and final metrics for the HParams plugin in this run's folder.

    tensorboardX's ``add_hparams`` writes to a new sub-folder; this writes the same three
    summaries into the step's own event file so the session belongs to the step's run.
    ``step`` is the step of these events (e.g. the last training step, so a resumed run's
    ``purge_step`` also covers them); default none (0).
    """
    from tensorboardX.summary import hparams as hparams_summary

    clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
    exp, ssi, sei = hparams_summary(clean, dict(metrics))
    if not fastpath.add_summaries(writer, (exp, ssi, sei), step):
        # public path: tensorboardX puts the session in a sub-folder of its own
        writer.add_hparams(clean, dict(metrics), name="hparams", global_step=step)
    for name, value in metrics.items():
        writer.add_scalar(name, value, step)


def image_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """Tile ``(n, H, W, C)`` images in [0, 1] into one ``(C, rows*H, columns*W)`` image."""
    n, h, w, c = images.shape
    rows = max(1, math.ceil(n / columns))
    grid = np.zeros((c, rows * (h + 1), columns * (w + 1)), dtype=np.float32)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        top, left = r * (h + 1), col * (w + 1)
        grid[:, top:top + h, left:left + w] = img.transpose(2, 0, 1)
    return grid


#: The most pixels a side of a :func:`heatmap` has: cells shrink (to one pixel) past it, so a
#: matrix of ``limits.MAX_CLASSES`` classes draws in 3 x 2048**2 floats (48 MiB), not 5 GB.
HEATMAP_MAX_SIDE = 2048


def heatmap_cell(cells: int, cell: int) -> int:
    """The side of one cell when ``cells`` of them, wanted ``cell`` pixels wide, are drawn."""
    return max(1, min(cell, HEATMAP_MAX_SIDE // max(cells, 1)))


def heatmap(matrix: np.ndarray, cell: int = 16) -> np.ndarray:
    """A matrix as a ``(3, rows*c, cols*c)`` float32 image: white (0) to dark blue (max).

    ``c`` is ``cell``, smaller where the image would be wider than ``HEATMAP_MAX_SIDE``
    (:func:`heatmap_cell`).
    """
    m = np.asarray(matrix, dtype=np.float32)
    cell = heatmap_cell(max(m.shape), cell)
    top = m.max() if m.size else 0.0
    scaled = m / top if top > 0 else m
    rgb = np.stack([1 - scaled, 1 - 0.7 * scaled, 1 - 0.2 * scaled])
    return rgb.repeat(cell, axis=1).repeat(cell, axis=2)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A small Markdown table (used in text summaries and reports)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
