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

    python -m benchmarks.bench_discovery --scale [--sizes 50,200,500 --steps 4 --rounds 1]

``--scale`` (issue 26, item 8) measures how the shared TensorBoard grows with the number of
finished runs: log roots of ``--sizes`` runs (one compacted event object a step, as a
finished run leaves it) on an S3 server (moto, in its own process), TensorBoard started by
``start_tensorboard`` (what ``tbpipe tensorboard`` runs, in a small driver process: the
loaders' fixed cost of importing tbpipe is in every setting alike) once per setting in
:data:`SCALE_SETTINGS` (the Python loader reading the store, or the mirror loader), timed
from the driver's start until every series is served up to its last point, with the
resident memory (now and peak, from ``/proc``) of TensorBoard's processes and of tbpipe's
then. The settings alternate within each size (A B, B A, ...).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import IO

from benchmarks.bench_tensorboard import STEP_NAMES, serve_all
from benchmarks.common import descendants, free_port, median, median_ratio_interval, progress
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
    "--scale": (False, "the growth with the run count on S3 (moto) instead of the four arms"),
    "--sizes": ("50,200,500", "--scale: finished runs per log root"),
    "--settings": ("after,mirror", "--scale: which of SCALE_SETTINGS (by the word before ':')"),
}
#: --scale's TensorBoard settings: name -> (loader, flags added after tbpipe's own; the last
#: value of a flag wins). "before": the Python loader with one reload thread, TensorBoard's
#: default and what `tbpipe tensorboard` passed before issue 26; "after": the Python loader
#: with the launcher's defaults (16 reload threads, s3fs); "mirror": the native data server
#: on a local mirror synced by tbpipe (`auto`'s choice for s3:// now).
SCALE_SETTINGS = {
    "before: python loader, one reload thread": ("python", ("--max_reload_threads=1",)),
    "after: python loader, tbpipe's defaults": ("python", ()),
    "mirror: native data server on a local mirror": ("mirror", ()),
}
#: The driver process of --scale: ``start_tensorboard`` as ``tbpipe tensorboard`` calls it;
#: SIGTERM stops TensorBoard and the mirror's sync. Arguments: root, port, loader, flags...
DRIVER = """
import signal, sys
from tbpipe.pipelines.runners.tensorboard import start_tensorboard
root, port, loader, *extra = sys.argv[1:]
server = start_tensorboard(root, port=int(port), loader=loader, extra_args=extra,
                           ready_timeout=600)
signal.signal(signal.SIGTERM, lambda *_: server.process.terminate())
try:
    server.process.wait()
finally:
    server.stop()
"""


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


def upload(root: str, objects: list, threads: int) -> None:
    """Write ``(name, bytes)`` objects under the store URI ``root``, ``threads`` at a time."""
    from tbpipe.components.common.storage import write_bytes

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: write_bytes(f"{root}/{item[0]}", item[1]), objects))


def run(args: argparse.Namespace) -> Report:
    """Write the four roots, time TensorBoard on each in alternating rounds, report."""
    if args.scale:
        return run_scale(args)
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
            upload(f"gs://{BUCKET}/{prefix}", objects, threads=4)
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


# --- --scale: 50, 200, 500 finished runs on S3 ------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux ``/proc``)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def s3_server() -> Iterator[int]:
    """moto's S3 server in a process of its own; this process (and its children) point at it.

    Yields:
        The server's process id (its CPU time says how much of a wait was the store's).
    """
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), urllib.request.urlopen(endpoint + "/moto-api/",
                                                                      timeout=1):
                break
            time.sleep(0.1)
        os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench",
                           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def memory_mib(pid: int) -> tuple[float, float]:
    """The resident memory of process ``pid`` now and at its peak, MiB (Linux ``/proc``)."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines()
                  if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def start_driver(loader: str, root: str, port: int, log: IO[bytes],
                 extra: tuple[str, ...] = ()) -> tuple[subprocess.Popen, str]:
    """Start :data:`DRIVER` (``start_tensorboard`` with ``loader`` and flags ``extra``).

    A :data:`benchmarks.bench_tensorboard.Launch`; the URL is TensorBoard's.
    """
    from benchmarks.report import quiet_env
    from tbpipe.pipelines.runners.tensorboard import tensorboard_env

    process = subprocess.Popen([sys.executable, "-c", DRIVER, root, str(port), loader, *extra],
                               stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                               env=tensorboard_env(quiet_env()))
    return process, f"http://127.0.0.1:{port}/"


def usage_sampler(store_pid: int) -> Callable[[subprocess.Popen], dict[str, float]]:
    """A ``sample`` for :func:`serve_all` given the driver: memory and CPU from ``/proc``.

    The store's CPU seconds are counted from this call on.

    Args:
        store_pid: The S3 server's process id.

    Returns:
        A function of the driver's process giving ``rss_mib`` and ``peak_rss_mib``
        (TensorBoard's processes: the frontend and the data server, summed),
        ``tbpipe_rss_mib`` (the driver, which holds the mirror), ``tb_cpu_s``,
        ``tbpipe_cpu_s`` and ``store_cpu_s`` (CPU seconds used by then).
    """
    store_cpu = cpu_seconds(store_pid)

    def sample(process: subprocess.Popen) -> dict[str, float]:
        tensorboard = descendants(process.pid)
        memory = [memory_mib(pid) for pid in tensorboard]
        return {"rss_mib": sum(now for now, _ in memory),
                "peak_rss_mib": sum(peak for _, peak in memory),
                "tbpipe_rss_mib": memory_mib(process.pid)[0],
                "tb_cpu_s": sum(cpu_seconds(pid) for pid in tensorboard),
                "tbpipe_cpu_s": cpu_seconds(process.pid),
                "store_cpu_s": cpu_seconds(store_pid) - store_cpu}

    return sample


def serve_scale(root: str, series: int, points: int, setting: tuple[str, tuple[str, ...]],
                timeout: float, store_pid: int) -> dict:
    """Start TensorBoard as ``tbpipe tensorboard`` does on ``root``; time and memory once served.

    Returns:
        :func:`serve_all`'s marks (``http``, ``all``, ``served``...) and
        :func:`usage_sampler`'s, taken as soon as every series is served.
    """
    loader, extra = setting
    return serve_all(loader, root, series, points, timeout,
                     launch=functools.partial(start_driver, extra=extra),
                     sample=usage_sampler(store_pid))


def scale_objects(args: argparse.Namespace, path: str, runs: int, prefix: str = "logs") -> list:
    """``runs`` finished runs x ``--steps`` steps, one compacted event object each."""
    from tbpipe.components.common.tensorboard.segments import COMPACTED_SUFFIX, restart_marker

    blob = (restart_marker(path) or b"") + open(path, "rb").read()
    name = "events.out.tfevents.1700000000.bench.1" + COMPACTED_SUFFIX
    return [(f"{prefix}/bench/run-{run:04d}/{step}/{name}", blob)
            for run in range(runs) for step in STEP_NAMES[:args.steps]]


def run_scale(args: argparse.Namespace) -> Report:
    """Per size and setting: seconds until every series is served, and TensorBoard's memory."""
    from tbpipe.components.common.storage import filesystem

    if args.full:
        args.steps, args.points = 4, 100
    sizes = [int(size) for size in args.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="tbpipe-bench-scale-")
    try:
        path = step_events(work, args.points, args.tags)
        results: dict[tuple[int, str], list[dict]] = {}
        with s3_server() as store_pid:
            for size in sizes:  # a bucket each: moto lists a prefix by scanning its bucket
                bucket = f"{BUCKET}-{size}"
                progress(f"discovery --scale: uploading {size} runs x {args.steps} steps")
                filesystem(f"s3://{bucket}")[0].mkdir(bucket)
                upload(f"s3://{bucket}", scale_objects(args, path, size), threads=8)
                order = [name for name in SCALE_SETTINGS
                         if name.split(":")[0] in args.settings.split(",")]
                for round_ in range(args.rounds):
                    for name in order if round_ % 2 == 0 else order[::-1]:
                        progress(f"discovery --scale: {size} runs, round {round_ + 1}, {name}")
                        series = size * args.steps * args.tags
                        marks = serve_scale(f"s3://{bucket}/logs", series, args.points,
                                            SCALE_SETTINGS[name], args.timeout, store_pid)
                        if marks["served"] != series:
                            raise RuntimeError(f"{size} runs, {name}: {marks['served']}/{series}"
                                               " series served")
                        progress(f"discovery --scale: {size} runs, {name}: every series after "
                                 f"{marks['all']:.1f} s, RSS TensorBoard "
                                 f"{marks['rss_mib']:.0f} MiB + tbpipe "
                                 f"{marks['tbpipe_rss_mib']:.0f} MiB, CPU TensorBoard "
                                 f"{marks['tb_cpu_s']:.1f} s, tbpipe {marks['tbpipe_cpu_s']:.1f}"
                                 f" s, store {marks['store_cpu_s']:.1f} s, load "
                                 f"{os.getloadavg()[0]:.1f}")
                        results.setdefault((size, name), []).append(marks)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return build_scale_report(args, sizes, results)


def build_scale_report(args: argparse.Namespace, sizes: list[int],
                       results: dict[tuple[int, str], list[dict]]) -> Report:
    """One row per size and setting; the growth from the smallest size, per setting."""
    rows, headline = [], {}
    for name in [name for name in SCALE_SETTINGS if (sizes[0], name) in results]:
        first = median([m["all"] for m in results[(sizes[0], name)]])
        for size in sizes:
            marks = results[(size, name)]
            served = median([m["all"] for m in marks])
            rows.append([name, size, size * args.steps * args.tags,
                         f"{median([m['http'] for m in marks]):.1f}", f"{served:.1f}",
                         " ".join(f"{m['all']:.1f}" for m in marks),
                         f"{served / first:.2f}",
                         f"{max(m['rss_mib'] for m in marks):.0f}",
                         f"{max(m['peak_rss_mib'] for m in marks):.0f}",
                         f"{max(m['tbpipe_rss_mib'] for m in marks):.0f}",
                         f"{median([m['tb_cpu_s'] for m in marks]):.1f}",
                         f"{median([m['tbpipe_cpu_s'] for m in marks]):.1f}",
                         f"{median([m['store_cpu_s'] for m in marks]):.1f}"])
            headline[f"{name.split(':')[0]}_{size}_s"] = round(served, 1)
        last = median([m["all"] for m in results[(sizes[-1], name)]])
        headline[f"{name.split(':')[0]}_growth"] = round(last / first, 2)
    report = Report("bench_discovery", "8b. The shared TensorBoard at a team's scale (s3://)",
                    ["setting", "finished runs", "series", "answers HTTP s",
                     "every series served s (median)", "each round s", f"x {sizes[0]} runs",
                     "TensorBoard RSS then MiB", "TensorBoard peak RSS MiB", "tbpipe RSS MiB",
                     "TensorBoard CPU s", "tbpipe CPU s", "store CPU s"], rows)
    report.headline.update(headline)
    report.notes += [
        f"Each run: {args.steps} step folders, one compacted event object each ({args.tags} "
        f"scalar tags x {args.points} points); moto's S3 server in its own process on the "
        "same machine (no network latency).",
        "TensorBoard started by start_tensorboard (tbpipe tensorboard's) in a driver process, "
        "TensorFlow-free frontend, reload interval 5 s; the driver's import of tbpipe (kfp "
        f"included) is in every setting; {args.rounds} round(s) per setting.",
    ]
    return report


def summary(b: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    if any(key.endswith("_growth") for key in b):
        return ["8b TensorBoard at a team's scale (s3://)", "growth from the fewest runs to the "
                "most: " + ", ".join(f"{k.split('_')[0]} {v}x" for k, v in b.items()
                                     if k.endswith("_growth")), "within 3x"]
    return ["8 TensorBoard discovery (gs://)",
            f"before {b['before_s']} s, after {b['after_s']} s "
            f"({b['before_over_after']}x)", "one object per step, no checkpoints in the tree"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_discovery", __doc__, FLAGS, run, summary=summary))
