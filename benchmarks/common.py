"""What every benchmark's measurements share: generated data, statistics, paired runs.

Figures are ratios measured in one process or one paired run, because the machines these
run on are shared and noisy: an absolute figure alone says little, a ratio of two arms
measured side by side says what the pipeline costs. The command line, the report and its
tables are in ``benchmarks.report``; ``python -m benchmarks`` runs all five benchmarks.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

IMAGE_SIDE = 28
CLASSES = 10


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
    from tbpipe.components.common.dataset import DatasetWriter

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


def progress(message: str) -> None:
    """A progress line on stderr (the report itself goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def alternate(rounds: int, arms: Mapping[str, Callable[[], tuple[object, float]]],
              label: str) -> dict[str, dict[str, list]]:
    """Run two arms ``rounds`` times each in A B, B A, A B, ... order (drift hits both alike).

    Args:
        rounds: Runs per arm.
        arms: The two arms by name; each run returns ``(epoch clock, end-to-end seconds)``.
        label: What the progress lines start with.

    Returns:
        Per arm, ``{"clocks": [...], "e2e": [...]}`` in the order they ran.
    """
    names = list(arms)
    results: dict[str, dict[str, list]] = {name: {"clocks": [], "e2e": []} for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            progress(f"{label} round {round_ + 1}/{rounds}, {name}")
            clock, seconds = arms[name]()
            results[name]["clocks"].append(clock)
            results[name]["e2e"].append(seconds)
    return results


@contextlib.contextmanager
def work_folder(keep: str | None, prefix: str) -> Iterator[str]:
    """A folder to generate data into: ``keep`` (created, left in place) or a temporary one.

    Args:
        keep: A folder to use and keep (its files may be reused), or None.
        prefix: The temporary folder's name prefix.

    Yields:
        The folder's path; a temporary one is removed on leaving.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        folder = keep or tmp
        os.makedirs(folder, exist_ok=True)
        yield folder


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 60) -> object:
    """GET ``url`` and parse the JSON reply."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` (children, theirs...), from ``/proc``'s parent links."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(stat[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found
