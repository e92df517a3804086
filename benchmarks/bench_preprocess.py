"""Benchmark 3: preprocess rows/s and peak memory as the table grows, CSV and Parquet.

    python -m benchmarks.bench_preprocess [--sizes 10000,100000] [--full]

Generates label,pixel0..pixel783 tables (MNIST-like bytes, see ``common.mnist_like``) chunk by
chunk, then runs the preprocess step's logic (``preprocess_data``: read, clean, scale, split,
write the three Datasets, log the summary) on each in a fresh process, which reports its time
and its peak RSS (``VmHWM``, the high-water mark of its own memory: ``getrusage``'s would also
count the parent's pages at fork time) next to its peak after the imports.
``--full`` adds the 1M-row tables (about 1.7 GB of CSV). Parquet files are written in row
groups of ``--row-group`` rows (pyarrow reads a whole row group at a time, so that, not the
table, bounds what a reader holds).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np

from benchmarks.common import mnist_like, progress, ratio, work_folder
from benchmarks.report import Report, fmt, in_fresh_process, main_for

GEN_CHUNK = 10_000
PIXELS = 28 * 28


FLAGS = {
    "--sizes": ("10000,30000,100000", "table rows, comma-separated"),
    "--full": (False, "add the 1,000,000-row tables"),
    "--formats": ("csv,parquet", None),
    "--row-group": (GEN_CHUNK, "rows per Parquet row group in the generated files"),
    "--keep": (None, "generate the tables into this folder and keep them"),
}


def generate_chunks(rows: int):  # noqa: ANN201 - yields (labels, pixels (n, 784) uint8)
    """The table's rows, ``GEN_CHUNK`` at a time, the same for every format."""
    for index, start in enumerate(range(0, rows, GEN_CHUNK)):
        images, labels = mnist_like(min(GEN_CHUNK, rows - start), seed=index)
        yield labels, images.reshape(len(labels), PIXELS)


def write_csv(path: str, rows: int) -> None:
    """``label,pixel0,...`` with a header, written chunk by chunk (no pandas, for speed)."""
    names = np.array([str(v) for v in range(256)])
    with open(path, "w") as handle:
        handle.write(",".join(["label"] + [f"pixel{i}" for i in range(PIXELS)]) + "\n")
        for labels, pixels in generate_chunks(rows):
            text = names[np.concatenate([labels[:, None], pixels], axis=1)]
            handle.write("\n".join(",".join(row) for row in text.tolist()) + "\n")


def write_parquet(path: str, rows: int, row_group: int) -> None:
    """The same table as Parquet (int64 columns, as pandas writes them), in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = ["label"] + [f"pixel{i}" for i in range(PIXELS)]
    schema = pa.schema([(name, pa.int64()) for name in names])
    with pq.ParquetWriter(path, schema) as writer:
        for labels, pixels in generate_chunks(rows):
            columns = [pa.array(labels.astype(np.int64))]
            columns += [pa.array(pixels[:, i].astype(np.int64)) for i in range(PIXELS)]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema),
                               row_group_size=row_group)


def child(args: argparse.Namespace) -> dict:
    """In a fresh process: preprocess ``args.child``; its seconds, rows and peak memory."""
    import pandas  # noqa: F401 - imported before the baseline, like the readers do
    import pyarrow.parquet  # noqa: F401
    import tensorboardX  # noqa: F401

    seconds, result, peak, baseline = measure_preprocess(args.child)
    return {"seconds": seconds, "rows": result.stats["rows_read"], "peak_mb": peak,
            "baseline_mb": baseline}


def measure_preprocess(data_uri: str) -> tuple[float, object, float, float]:
    """``preprocess_data`` on ``data_uri`` with default settings, in this process.

    Returns seconds, the PreprocessResult, the peak RSS (MB) and the peak before it started
    (the imports a caller made first, like the readers do).
    """
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data

    baseline = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-pre-") as out:
        started = time.perf_counter()
        result = preprocess_data(data_uri, os.path.join(out, "train"),
                                 os.path.join(out, "val"), os.path.join(out, "test"),
                                 os.path.join(out, "logs"), PreprocessConfig())
        seconds = time.perf_counter() - started
    return seconds, result, peak_rss_mb(), baseline


def peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (``VmHWM``), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(args: argparse.Namespace) -> Report:
    """Generate, measure (each table in a fresh process), and return the report."""
    sizes = [int(s) for s in args.sizes.split(",")] + ([1_000_000] if args.full else [])
    formats = args.formats.split(",")
    results = []
    with work_folder(args.keep, "tbpipe-bench-tables-") as folder:
        for rows in sizes:
            for kind in formats:
                path = os.path.join(folder, f"table-{rows}.{kind}")
                if not os.path.exists(path):
                    progress(f"preprocess: writing {rows:,} rows of {kind}")
                    (write_csv(path, rows) if kind == "csv"
                     else write_parquet(path, rows, args.row_group))
                progress(f"preprocess: {rows:,} rows of {kind}")
                result = in_fresh_process("bench_preprocess", ["--child", path])
                results.append({"kind": kind, "rows": rows,
                                "file_mb": os.path.getsize(path) / 2**20, **result})
                if not args.keep:
                    os.remove(path)
    return build_report(args, results, formats)


def build_report(args: argparse.Namespace, results: list[dict], formats: list[str]) -> Report:
    """The table and the growth figures."""
    rows = [[r["kind"], fmt(r["rows"]), fmt(r["file_mb"], 1), f"{r['seconds']:.1f}",
             fmt(ratio(r["rows"], r["seconds"])), fmt(r["peak_mb"]),
             fmt(r["peak_mb"] - r["baseline_mb"])] for r in results]
    report = Report("bench_preprocess", "3. Preprocess scaling: rows/s and peak memory",
                    ["format", "rows", "file MB", "seconds", "rows/s", "peak RSS MB",
                     "above imports MB"], rows)
    for kind in formats:
        mine = sorted((r for r in results if r["kind"] == kind), key=lambda r: r["rows"])
        if len(mine) < 2:
            continue
        small, before, big = mine[0], mine[-2], mine[-1]
        exponent = (math.log(big["seconds"] / small["seconds"])
                    / math.log(big["rows"] / small["rows"]))
        growth = ratio(big["peak_mb"], before["peak_mb"])
        report.headline[f"{kind}_rows_per_s"] = round(ratio(big["rows"], big["seconds"]))
        report.headline[f"{kind}_time_exponent"] = round(exponent, 2)
        report.headline[f"{kind}_memory_growth"] = round(growth, 2)
        report.notes.append(
            f"{kind}: {big['rows'] // small['rows']}x the rows took "
            f"{big['seconds'] / small['seconds']:.1f}x the time (time ~ rows^{exponent:.2f}); "
            f"peak memory {before['peak_mb']:.0f} MB at {before['rows']:,} rows, "
            f"{big['peak_mb']:.0f} MB at {big['rows']:,} (x{growth:.2f}).")
    report.notes.append(f"Parquet row groups of {args.row_group:,} rows; preprocess reads "
                        "10,000-row chunks and writes 50,000-record shards; a 10,000-row table "
                        "is one chunk, so memory reaches its steady level from about 3 chunks.")
    return report


def summary(p: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    return ["3 preprocess scaling", "; ".join(
        f"{kind}: {p[f'{kind}_rows_per_s']:,} rows/s, time ~ rows^"
        f"{p[f'{kind}_time_exponent']}, peak memory x{p[f'{kind}_memory_growth']} "
        "between the two largest tables"
        for kind in ("csv", "parquet") if f"{kind}_rows_per_s" in p), "flat memory"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_preprocess", __doc__, FLAGS, run, child, summary=summary))
