"""``benchmarks.bench_discovery`` and the one serving loop it shares with ``bench_tensorboard``.

``serve_all`` is tried on a stand-in for TensorBoard (a small HTTP server answering the two
scalars endpoints the loop polls), so what it measures and what it stops are seen without
starting TensorBoard; ``--scale`` itself runs at a toy size on moto's S3 server.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from benchmarks.bench_discovery import upload, usage_sampler
from benchmarks.bench_tensorboard import serve_all, stop
from tbpipe.components.common.storage import read_bytes
from tests.helpers import run_benchmark

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="the benchmarks read /proc (Linux)")

#: A stand-in for TensorBoard: serves RUNS' ``loss`` up to step ``points``; starts a child
#: (whose pid it writes to ``pid_file``) and leaves it running when it is terminated.
STAND_IN = r"""
import http.server, json, signal, subprocess, sys
port, pid_file, points = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(pid_file, "w").write(str(child.pid))
RUNS = ["bench/run-0/train", "bench/run-1/train"]

class Handler(http.server.BaseHTTPRequestHandler):
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply({run: {"loss": {}} for run in RUNS})

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.reply({run: [[0.0, step, 1.0] for step in range(1, points + 1)] for run in RUNS})

    def log_message(self, *args):
        pass

signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def launch_stand_in(loader: str, root: str, port: int, log: IO[bytes], pid_file: Path,
                    points: int) -> tuple[subprocess.Popen, str]:
    """A ``Launch`` for :func:`serve_all` that starts :data:`STAND_IN`."""
    process = subprocess.Popen([sys.executable, "-c", STAND_IN, str(port), str(pid_file),
                                str(points)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}/"


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_serve_all_samples_once_every_series_is_served_and_stops_what_it_started(tmp_path):
    pid_file, calls = tmp_path / "child.pid", []

    def sample(process: subprocess.Popen) -> dict[str, float]:
        calls.append((process, process.poll()))
        return {"sampled": 1.0}

    launch = functools.partial(launch_stand_in, pid_file=pid_file, points=5)
    marks = serve_all("stand-in", "unused", 2, 5, 120, launch=launch, sample=sample)

    assert marks["served"] == 2 and marks["sampled"] == 1.0
    assert {"http", "all", "fetch_all"} <= set(marks)
    ((process, status),) = calls
    assert status is None  # sampled while it was running
    assert process.poll() is not None  # stopped
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(child), "the stand-in's child was left running"


def test_serve_all_stops_at_the_timeout_with_what_was_served(tmp_path):
    launch = functools.partial(launch_stand_in, pid_file=tmp_path / "child.pid", points=3)
    marks = serve_all("stand-in", "unused", 2, 4, 3, launch=launch)  # step 4 never comes
    assert marks["served"] == 0


def test_serve_all_names_the_exit_and_the_output_of_a_process_that_ended(tmp_path):
    def launch(loader: str, root: str, port: int, log: IO[bytes]) -> tuple[subprocess.Popen, str]:
        code = "import sys; print('no such log root', flush=True); sys.exit(3)"
        process = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=log)
        return process, f"http://127.0.0.1:{port}/"

    with pytest.raises(RuntimeError, match=r"\(driver\) exited with 3: no such log root"):
        serve_all("driver", "unused", 1, 1, 120, launch=launch)


def test_usage_sampler_reads_the_driver_its_children_and_the_store(tmp_path):
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); print('started', flush=True); time.sleep(60)")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "started"
        sample = usage_sampler(os.getpid())(driver)
    finally:
        stop(driver)
    assert set(sample) == {"rss_mib", "peak_rss_mib", "tbpipe_rss_mib", "tb_cpu_s",
                           "tbpipe_cpu_s", "store_cpu_s"}
    assert sample["rss_mib"] > 0 and sample["tbpipe_rss_mib"] > 0  # the child and the driver
    assert sample["peak_rss_mib"] >= sample["rss_mib"]


@pytest.mark.parametrize("store", ["s3_root", "gcs_root"])
def test_upload_writes_every_object_under_the_root(store, request):
    root = request.getfixturevalue(store)
    objects = [(f"logs/run-{n}/train/events", bytes([n]) * 10) for n in range(5)]
    upload(root, objects, threads=3)
    assert [read_bytes(f"{root}/{name}") for name, _ in objects] == [b for _, b in objects]


@pytest.mark.slow
def test_scale_reports_every_size(tmp_path):
    report = run_benchmark("bench_discovery", [
        "--scale", "--sizes", "2,3", "--steps", "2", "--points", "3", "--rounds", "1",
        "--settings", "mirror", "--timeout", "600"], tmp_path, timeout=1200)
    assert [(row[0].split(":")[0], row[1], row[2]) for row in report["rows"]] == [
        ("mirror", 2, 8), ("mirror", 3, 12)]  # (the Python loader: the same loop, 2 more starts)
    assert "mirror_growth" in report["headline"]
