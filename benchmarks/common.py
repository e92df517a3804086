"""What every benchmark shares: the machine, generated data, timing, the printed table.

Each benchmark module has ``add_arguments(parser)`` and ``run(args) -> Report`` and can be run
alone (``python -m benchmarks.bench_train``); ``python -m benchmarks`` runs all five.
Figures are ratios measured in one process or one paired run, because the machines these
run on are shared and noisy: an absolute figure alone says little, a ratio of two arms
measured side by side says what the pipeline costs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

IMAGE_SIDE = 28
CLASSES = 10


@dataclasses.dataclass
class Report:
    """One benchmark's result: a table, notes, and the headline figures."""

    name: str
    title: str
    header: list[str]
    rows: list[list[object]]
    notes: list[str] = dataclasses.field(default_factory=list)
    headline: dict[str, object] = dataclasses.field(default_factory=dict)
    extra_tables: list[dict] = dataclasses.field(default_factory=list)
    machine: dict[str, object] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def add_table(self, title: str, header: list[str], rows: list[list[object]]) -> None:
        """Add a secondary table (printed after the main one)."""
        self.extra_tables.append({"title": title, "header": header, "rows": rows})

    def markdown(self) -> str:
        """The report as Markdown: title, tables, notes."""
        from components.common.tblog import markdown_table

        parts = [f"### {self.title}", markdown_table(self.header, self.rows)]
        for table in self.extra_tables:
            parts += [f"**{table['title']}**", markdown_table(table["header"], table["rows"])]
        parts += [f"- {note}" for note in self.notes]
        parts.append(f"_{self.seconds:.0f} s; load average {load_average()}_")
        return "\n\n".join(parts)


def machine_info() -> dict[str, object]:
    """CPU model, cores, vector extensions, memory, versions, load: where figures came from."""
    info: dict[str, object] = {"python": platform.python_version(),
                               "cores": len(os.sched_getaffinity(0))}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                     if line.startswith("model name"))
        flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags"))
        info["cpu"] = model
        info["simd"] = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile")
                                 if f" {f}" in flags)
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text()
                          .splitlines() if line.startswith("MemTotal")))
        info["memory_gib"] = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        info["cpu"] = platform.processor() or "unknown"
    for package in ("tensorflow", "keras", "tensorboard", "tensorboardX", "kfp", "pandas",
                    "pyarrow"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    info["load_average"] = load_average()
    return info


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on a shared machine shows here)."""
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` generated 28x28 digit-like images (uint8, about 19% ink) and labels 0..9.

    Each class has a fixed stroke template; every image drops some of its strokes and gets a
    little noise, so the data is learnable and compresses like MNIST, and costs no download.
    """
    rng = np.random.default_rng(seed)
    templates = np.zeros((CLASSES, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
    for k in range(CLASSES):
        strokes = rng.random((IMAGE_SIDE, IMAGE_SIDE)) < 0.19
        templates[k][strokes] = rng.integers(64, 256, strokes.sum())
    labels = rng.integers(0, CLASSES, n).astype(np.int32)
    images = np.empty((n, IMAGE_SIDE, IMAGE_SIDE), np.uint8)
    for start in range(0, n, 10_000):
        part = slice(start, min(n, start + 10_000))
        keep = rng.random((part.stop - start, IMAGE_SIDE, IMAGE_SIDE)) > 0.15
        images[part] = templates[labels[part]] * keep
    return images, labels


def write_records(root: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write uint8 ``(n, 28, 28)`` images as a tbpipe Dataset folder."""
    from components.common.dataset import DatasetWriter

    writer = DatasetWriter(root, (IMAGE_SIDE, IMAGE_SIDE, 1), CLASSES)
    for start in range(0, len(labels), 50_000):
        part = slice(start, start + 50_000)
        writer.write(images[part][..., None], labels[part])
    writer.close()


def median(values: Sequence[float]) -> float:
    """The median (0.0 for no values)."""
    return float(statistics.median(values)) if values else 0.0


def median_ratio_interval(a: Sequence[float], b: Sequence[float], draws: int = 2000,
                          seed: int = 0) -> tuple[float, float]:
    """A 90% bootstrap interval of ``median(a) / median(b)`` (the noise of a paired figure)."""
    if not a or not b:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    ratios = (np.median(rng.choice(xa, (draws, len(xa))), axis=1)
              / np.median(rng.choice(xb, (draws, len(xb))), axis=1))
    low, high = np.percentile(ratios, [5, 95])
    return float(low), float(high)


def ratio(a: float, b: float) -> float:
    """``a / b`` (0.0 when ``b`` is 0)."""
    return a / b if b else 0.0


class Stopwatch:
    """Wall and CPU time of a block: ``with Stopwatch() as sw: ...; sw.wall, sw.cpu``."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def fmt(value: float, digits: int = 0) -> str:
    """A number with thousands separators and ``digits`` decimals."""
    return f"{value:,.{digits}f}"


def main_for(name: str, title: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], Report],
             argv: Sequence[str] | None = None) -> int:
    """The command line of one benchmark: parse, run, print Markdown, optionally write JSON."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=title)
    add_arguments(parser)
    parser.add_argument("--json", help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    report = run(args)
    report.seconds = time.perf_counter() - started
    report.machine = machine_info()
    print(report.markdown(), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dataclasses.asdict(report), indent=2,
                                              default=str))
    return 0


def progress(message: str) -> None:
    """A progress line on stderr (the report itself goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
