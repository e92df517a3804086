"""Benchmark 5: how long until TensorBoard serves every series of a big log root, per loader.

    python -m benchmarks.bench_tensorboard [--runs 10 --steps 4 --points 2000] [--full]

Writes a log root of ``--runs`` runs x ``--steps`` step folders x ``--points`` points of
``--tags`` scalar tags each (``{root}/bench/run-NN/{step}``, tensorboardX event files, as the
pipeline writes them), then starts TensorBoard on it the way ``tbpipe tensorboard`` does
(``tbpipe.pipelines.runners.tensorboard.start_tensorboard``) with each loader, and measures
from the start of the process: when it answers HTTP, and when every series (run x tag) is
served up to its last step, polling ``/data/plugin/scalars/tags`` and ``.../scalars`` like the
dashboard does.
``--full`` is the issue's size: 50 runs x 4 steps x 10,000 points.

Loaders: ``fast`` (``--load_fast=true``, the Rust data server behind tbpipe's frontend that
does not import TensorFlow, as ``tbpipe tensorboard`` starts it), ``fast+tf`` (the same data
server started by plain ``tensorboard``, which imports TensorFlow), ``python`` (tbpipe's
``--load_fast=false`` without TensorFlow, as for gs:// on an emulator) and ``python+tf``
(plain ``tensorboard --load_fast=false``, TensorFlow imported).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import IO

from benchmarks.common import descendants, free_port, get_json, progress, work_folder
from benchmarks.report import Report, fmt, main_for, quiet_env

STEP_NAMES = ("preprocess", "train", "evaluate", "finetune", "evaluate-finetuned")
LOADERS = ("fast", "fast+tf", "python", "python+tf")
#: How :func:`serve_all` starts TensorBoard: ``(loader, root, port, log file)`` to
#: ``(process, base URL)``, the process writing its output to the log file.
Launch = Callable[[str, str, int, IO[bytes]], tuple[subprocess.Popen, str]]


FLAGS = {
    "--runs": (10, None),
    "--steps": (4, "step folders per run (1-5)"),
    "--points": (2_000, "points per series"),
    "--tags": (2, "scalar tags per step folder"),
    "--full": (False, "50 runs x 4 steps x 10,000 points"),
    "--loaders": (",".join(LOADERS), None),
    "--timeout": (900.0, "per loader, seconds"),
    "--keep": (None, "write the log root here and keep it (reused if there)"),
}


def write_run(root: str, run: int, steps: int, points: int, tags: int) -> None:
    """One run's step folders, every tag at steps 1..points."""
    from tbpipe.components.common.tensorboard import fastpath
    from tbpipe.components.common.tensorboard.writer import open_writer

    names = [f"batch/metric_{t}" for t in range(tags)]
    for step in STEP_NAMES[:steps]:
        with open_writer(os.path.join(root, "bench", f"run-{run:02d}", step)) as writer:
            for point in range(1, points + 1):
                fastpath.add_scalars(writer, {name: 1.0 / (point + t) for t, name in
                                           enumerate(names)}, point)


def write_root(root: str, args: argparse.Namespace) -> int:
    """The whole log root, two runs at a time in child processes; the number of series."""
    done = os.path.join(root, ".complete")
    if not os.path.exists(done):
        progress(f"tensorboard: writing {args.runs} runs x {args.steps} steps x {args.points:,} "
                 f"points x {args.tags} tags")
        children = []
        for run in range(args.runs):
            code = (f"from benchmarks.bench_tensorboard import write_run; write_run({root!r}, "
                    f"{run}, {args.steps}, {args.points}, {args.tags})")
            children.append(subprocess.Popen([sys.executable, "-c", code]))
            if len(children) >= 2:
                children.pop(0).wait()
        for child in children:
            child.wait()
        open(done, "w").close()
    return args.runs * args.steps * args.tags


def start(loader: str, root: str, port: int, log: IO[bytes]) -> tuple[subprocess.Popen, str]:
    """Start TensorBoard with ``loader`` (as tbpipe does; the ``+tf`` ones plainly)."""
    from tbpipe.pipelines.runners.tensorboard import tensorboard_command

    args = [f"--logdir={root}", "--host=127.0.0.1", f"--port={port}", "--reload_interval=5"]
    if loader.endswith("+tf"):  # plain TensorBoard: its frontend imports TensorFlow
        fast = "true" if loader.startswith("fast") else "false"
        command = [sys.executable, "-m", "tensorboard.main", f"--load_fast={fast}", *args]
    else:
        command = tensorboard_command(root, "127.0.0.1", port, loader, 5)
    process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                               env=quiet_env())
    return process, f"http://127.0.0.1:{port}/"


def serve_all(loader: str, root: str, series: int, points: int, timeout: float,
              launch: Launch | None = None,
              sample: Callable[[subprocess.Popen], dict[str, float]] | None = None) -> dict:
    """Start TensorBoard on ``root``; seconds until HTTP answers and every series is served.

    Polls ``/data/plugin/scalars/tags`` and the scalars of every tag (as the dashboard does)
    every 0.5 s from the process's start until every series reaches step ``points`` or
    ``timeout`` passes; then fetches every series once more, timed; then stops the process
    and any process it left behind.

    Args:
        loader: The loader to start TensorBoard with (one of :data:`LOADERS`, or the
            ``launch``'s own).
        root: The log root.
        series: How many series (run x tag) the root holds.
        points: The last step of every series.
        timeout: Seconds to wait for every series.
        launch: Starts TensorBoard: ``(loader, root, port, log file)`` to ``(process, base
            URL)``; :func:`start` unless given.
        sample: Called with the process as soon as every series is served (or the timeout
            passed), before anything else is asked of TensorBoard; the marks it returns
            are added to this function's.

    Returns:
        ``http`` (s to answer; absent if it never did), ``all`` (s until every series was
        served, or the timeout), ``served`` (series served then), ``fetch_all`` (s to fetch
        every series once more), and ``sample``'s marks.

    Raises:
        RuntimeError: The process exited first (the message ends with its output).
    """
    marks: dict[str, float] = {}
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process, url = (launch or start)(loader, root, free_port(), log)
        complete: set[tuple[str, str]] = set()
        try:
            while time.perf_counter() - started < timeout and len(complete) < series:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"TensorBoard ({loader}) exited with "
                                       f"{process.returncode}: "
                                       + log.read().decode(errors="replace")[-2000:])
                try:
                    tags = get_json(url + "data/plugin/scalars/tags")
                except OSError:
                    time.sleep(0.2)
                    continue
                marks.setdefault("http", time.perf_counter() - started)
                complete = {key for key, last in last_steps(url, tags).items() if last >= points}
                if len(complete) < series:
                    time.sleep(0.5)
            marks["all"] = time.perf_counter() - started
            marks["served"] = len(complete)
            if sample is not None:
                marks.update(sample(process))
            fetch = time.perf_counter()
            last_steps(url, get_json(url + "data/plugin/scalars/tags"))
            marks["fetch_all"] = time.perf_counter() - fetch
        finally:
            stop(process)
    return marks


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """Terminate ``process`` (killed after ``timeout`` s), then kill what it left running."""
    children = descendants(process.pid)
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in children:  # none normally: TensorBoard stops its data server, the driver both
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def last_steps(url: str, tags: dict) -> dict[tuple[str, str], int]:
    """The last step served of every series, one request per tag (as the dashboard asks)."""
    runs_of: dict[str, list[str]] = {}
    for run, run_tags in tags.items():
        for tag in run_tags:
            runs_of.setdefault(tag, []).append(run)
    last = {}
    for tag, runs in runs_of.items():
        form = urllib.parse.urlencode([("tag", tag)] + [("runs", run) for run in runs]).encode()
        request = urllib.request.Request(url + "data/plugin/scalars/scalars_multirun", form,
                                         headers={"X-XSRF-Protected": "1"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            for run, points in json.loads(reply.read()).items():
                last[(run, tag)] = int(points[-1][1]) if points else 0
    return last


def run(args: argparse.Namespace) -> Report:
    """Write the log root, measure every loader, and return the report."""
    if args.full:
        args.runs, args.steps, args.points = 50, 4, 10_000
    with work_folder(args.keep, "tbpipe-bench-tb-") as root:
        started = time.perf_counter()
        series = write_root(root, args)
        written = time.perf_counter() - started
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root)
                   for f in files)
        results = {}
        for loader in args.loaders.split(","):
            progress(f"tensorboard: loader {loader}")
            results[loader] = serve_all(loader, root, series, args.points, args.timeout)
    return build_report(args, series, size, written, results)


def build_report(args: argparse.Namespace, series: int, size: int, written: float,
                 results: dict) -> Report:
    """The table and headline figures."""
    points = series * args.points
    rows = [[loader, f"{r.get('http', 0):.1f}", f"{r['all']:.1f}", f"{r['served']}/{series}",
             fmt(points / r["all"]) if r["served"] == series else "-",
             f"{r['fetch_all']:.1f}"] for loader, r in results.items()]
    report = Report("bench_tensorboard", "5. TensorBoard at scale: time to serve every series",
                    ["loader", "answers HTTP s", "every series served s", "series",
                     "points/s loaded", "fetch every series once s"], rows)
    fast, python = results.get("fast"), results.get("python")
    if fast and python:
        report.headline["python_over_fast"] = round(python["all"] / fast["all"], 1)
    report.headline.update({loader: round(r["all"], 1) for loader, r in results.items()})
    report.notes += [
        f"{args.runs} runs x {args.steps} steps x {args.points:,} points x {args.tags} tags = "
        f"{series} series, {points:,} points, {size / 2**20:.0f} MB of event files "
        f"(written in {written:.0f} s); reload interval 5 s.",
        "tbpipe tensorboard picks fast for local folders and real GCS when the data server "
        "binary is installed (pipelines/runners/tensorboard.py choose_loader).",
    ]
    return report


def summary(b: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    return ["5 TensorBoard at scale", ", ".join(
        f"{k} {v} s" for k, v in b.items() if k != "python_over_fast"),
        "fast loader where it can read"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_tensorboard", __doc__, FLAGS, run, summary=summary))
