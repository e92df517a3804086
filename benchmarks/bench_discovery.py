"""Benchmark 8: TensorBoard's time to discover and load a gs:// log root, before and after.

    python -m benchmarks.bench_discovery [--runs 20 --segments 10 --rounds 2] [--full]

On gcp-storage-emulator, four log roots of ``--runs`` finished runs x ``--steps`` step
folders, the same events in each, written directly (no training): each step's event file
as ``--segments`` segment objects (the live sink's objects, one per flush) or as the one
object compaction leaves; and ``--checkpoint-files`` checkpoint objects per train/finetune
step either inside the log tree (``{run}/checkpoints/{step}/``, the old default) or in the
sibling root ``{log_root}-checkpoints`` (the new default). TensorBoard is started on each
root the way ``tbpipe tensorboard`` starts it for an emulator (the Python loader over
gcsfs), and timed from process start until every series is served up to its last point.
The arms run in alternating order (A B C D, D C B A, ...), so drift hits all alike; figures
are medians and ratios of medians against the "after" arm measured in the same process.
``--full`` is the issue's size: 50 runs, 40 segments a step (200 s of a run at the 5 s flush),
10 checkpoint objects a train/finetune step.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

from benchmarks.bench_tensorboard import STEP_NAMES, serve_all
from benchmarks.common import free_port, median, median_ratio_interval, progress
from benchmarks.report import Report, main_for

BUCKET = "tbpipe-bench"
#: (events as, checkpoints) -> arm name; "before" is what tbpipe did, "after" what it does.
ARMS = {("segments", "inside"): "before: segments, checkpoints inside",
        ("segments", "outside"): "segments, checkpoints outside",
        ("compacted", "inside"): "compacted, checkpoints inside",
        ("compacted", "outside"): "after: compacted, checkpoints outside"}
FLAGS = {
    "--runs": (20, "finished runs"),
    "--steps": (4, "step folders per run (1-5)"),
    "--points": (100, "points per series"),
    "--tags": (2, "scalar tags per step folder"),
    "--segments": (10, "segments per step's event file (one per flush)"),
    "--checkpoint-files": (5, "checkpoint objects per train/finetune step"),
    "--full": (False, "50 runs, 40 segments a step, 10 checkpoint objects a step"),
    "--rounds": (2, "alternating rounds (each arm once per round)"),
    "--timeout": (900.0, "per TensorBoard start, seconds"),
}


@contextlib.contextmanager
def emulator() -> Iterator[str]:
    """An in-memory gcp-storage-emulator with the bucket; this process points at it."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "-q", "--default-bucket", BUCKET],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        with contextlib.suppress(OSError), urllib.request.urlopen(endpoint + "/", timeout=1):
            break
        time.sleep(0.1)
    os.environ.update({"STORAGE_EMULATOR_HOST": endpoint,
                       "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
    try:
        yield endpoint
    finally:
        process.terminate()
        process.wait()


def step_events(folder: str, points: int, tags: int) -> str:
    """One step's event file (tensorboardX, as the pipeline writes it); returns its path."""
    from tensorboardX import SummaryWriter

    with SummaryWriter(folder, flush_secs=600) as writer:
        for point in range(1, points + 1):
            for tag in range(tags):
                writer.add_scalar(f"batch/metric_{tag}", 1.0 / (point + tag), point)
    (name,) = [n for n in os.listdir(folder) if "tfevents" in n]
    return os.path.join(folder, name)


def split_records(data: bytes, parts: int) -> list[bytes]:
    """``data`` cut into about ``parts`` pieces of whole TFRecords, in order."""
    from tbpipe.components.common.tensorboard.segments import complete_length

    size, pieces, start = max(len(data) // parts, 1), [], 0
    while start < len(data):
        end = start + complete_length(data[start:start + size]) or len(data)
        end = end if end > start else len(data)
        pieces.append(data[start:end])
        start = end
    return pieces


def objects_of(args: argparse.Namespace, path: str) -> dict[tuple[str, str], list]:
    """Per arm, the ``(name, bytes)`` objects under ``gs://BUCKET/{arm}``."""
    from tbpipe.components.common.tensorboard.segments import COMPACTED_SUFFIX, restart_marker

    data, base = open(path, "rb").read(), "events.out.tfevents.1700000000.bench.1"
    events = {"segments": [(f"{base}.{seq:06d}", piece) for seq, piece in
                           enumerate(split_records(data, args.segments))],
              "compacted": [(base + COMPACTED_SUFFIX, (restart_marker(path) or b"") + data)]}
    checkpoint = [(f"ckpt-{n:04d}.weights.h5", os.urandom(1024))
                  for n in range(args.checkpoint_files)]
    arms = {}
    for (form, where), _ in ARMS.items():
        objects = []
        for run in range(args.runs):
            run_dir = f"logs/bench/run-{run:02d}"
            for step in STEP_NAMES[:args.steps]:
                objects += [(f"{run_dir}/{step}/{name}", blob) for name, blob in events[form]]
                if step in ("train", "finetune"):
                    folder = (f"{run_dir}/checkpoints/{step}" if where == "inside" else
                              f"logs-checkpoints/bench/run-{run:02d}/checkpoints/{step}")
                    objects += [(f"{folder}/{name}", blob) for name, blob in checkpoint]
        arms[(form, where)] = objects
    return arms


def upload(prefix: str, objects: list) -> None:
    """Upload ``objects`` under ``gs://BUCKET/{prefix}``, 4 at a time."""
    from tbpipe.components.common.storage import write_bytes

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda item: write_bytes(f"gs://{BUCKET}/{prefix}/{item[0]}", item[1]),
                      objects))


def run(args: argparse.Namespace) -> Report:
    """Write the four roots, time TensorBoard on each in alternating rounds, report."""
    if args.full:
        args.runs, args.segments, args.checkpoint_files = 50, 40, 10
    series = args.runs * args.steps * args.tags
    work = tempfile.mkdtemp(prefix="tbpipe-bench-discovery-")
    try:
        path = step_events(work, args.points, args.tags)
        arms = objects_of(args, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    times: dict[tuple[str, str], list[float]] = {arm: [] for arm in ARMS}
    counts = {}
    with emulator():
        for arm, objects in arms.items():
            prefix = "-".join(arm)
            progress(f"discovery: uploading {len(objects)} objects for {ARMS[arm]}")
            upload(prefix, objects)
            counts[arm] = sum(name.startswith("logs/") for name, _ in objects)
        order = list(ARMS)
        for round_ in range(args.rounds):
            for arm in order if round_ % 2 == 0 else order[::-1]:
                progress(f"discovery: round {round_ + 1}/{args.rounds}, {ARMS[arm]}")
                root = f"gs://{BUCKET}/{'-'.join(arm)}/logs"
                marks = serve_all("python", root, series, args.points, args.timeout)
                if marks["served"] != series:
                    raise RuntimeError(f"{ARMS[arm]}: {marks['served']}/{series} series served")
                times[arm].append(marks["all"])
    return build_report(args, series, counts, times)


def build_report(args: argparse.Namespace, series: int, counts: dict, times: dict) -> Report:
    """The table (one row per arm) and the ratios against the after arm."""
    after = times[("compacted", "outside")]
    rows = []
    for arm, name in ARMS.items():
        low, high = median_ratio_interval(times[arm], after)
        rows.append([name, counts[arm], f"{median(times[arm]):.1f}",
                     " ".join(f"{t:.1f}" for t in times[arm]),
                     f"{median(times[arm]) / median(after):.2f} ({low:.2f}-{high:.2f})"])
    report = Report("bench_discovery", "8. TensorBoard discovering a gs:// log root",
                    ["log root", "objects under it", "serve everything s (median)",
                     "each round s", "x after (90% interval)"], rows)
    before = median(times[("segments", "inside")])
    report.headline.update({
        "before_s": round(before, 1), "after_s": round(median(after), 1),
        "before_over_after": round(before / median(after), 2),
        "checkpoints_inside_over_outside": round(
            median(times[("compacted", "inside")]) / median(after), 2),
        "segments_over_compacted": round(
            median(times[("segments", "outside")]) / median(after), 2)})
    report.notes += [
        f"{args.runs} finished runs x {args.steps} steps x {args.tags} tags = {series} series "
        f"of {args.points} points; {args.segments} segments per step file before compaction; "
        f"{args.checkpoint_files} checkpoint objects (1 KiB each) per train/finetune step.",
        "gcp-storage-emulator in memory on the same machine: no network latency, so "
        "per-object costs on real GCS (tens of ms a request) weigh far more than here.",
        "TensorBoard: the Python loader over gcsfs (what tbpipe tensorboard uses for an "
        f"emulator), reload interval 5 s; {args.rounds} alternating rounds.",
    ]
    return report


def summary(b: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    return ["8 TensorBoard discovery (gs://)",
            f"before {b['before_s']} s, after {b['after_s']} s "
            f"({b['before_over_after']}x)", "one object per step, no checkpoints in the tree"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_discovery", __doc__, FLAGS, run, summary=summary))
