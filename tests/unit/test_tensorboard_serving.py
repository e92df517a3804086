"""``tbpipe tensorboard`` for real: a local log root served by the fast loader, no TensorFlow.

Which libraries a process loaded is read from ``/proc/<pid>/maps``: importing TensorFlow maps
its native libraries (``site-packages/tensorflow/...so``) into the process.
"""

from __future__ import annotations

import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tbpipe.components.common.tensorboard.writer import open_writer
from tests.helpers import TBPIPE, free_port, get_json

pytestmark = pytest.mark.skipif(not Path("/proc/self/maps").exists(),
                                reason="reads /proc/<pid>/maps (Linux)")

RUNS = {"exp/run-1/train": 30, "exp/run-2/evaluate": 12}  # run -> points of "loss"


def write_log_root(root: Path) -> None:
    """Each run's ``loss`` at steps 0..n-1, written by tensorboardX as the pipeline does."""
    for run, points in RUNS.items():
        with open_writer(str(root / run)) as writer:
            for step in range(points):
                writer.add_scalar("loss", 1.0 / (step + 1), step)


def served_losses(base_url: str) -> dict[str, list[tuple[int, float]]]:
    """Every run's served ``loss`` points; {} while TensorBoard does not answer yet."""
    try:
        tags = get_json(base_url + "data/plugin/scalars/tags")
    except OSError:
        return {}
    served = {}
    for run in tags:
        query = urllib.parse.urlencode({"run": run, "tag": "loss"})
        points = get_json(f"{base_url}data/plugin/scalars/scalars?{query}")
        served[run] = [(step, value) for _, step, value in points]
    return served


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # it ended meanwhile
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def mapped_files(pid: int) -> set[str]:
    """The files mapped into process ``pid`` (its executable, shared libraries, ...)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6}


def loads_tensorflow(files: set[str]) -> bool:
    return any("/tensorflow/" in path for path in files)


def test_cli_serves_a_local_root_with_the_fast_loader_and_no_tensorflow(tmp_path):
    write_log_root(tmp_path / "logs")
    port = free_port()
    cli = subprocess.Popen([*TBPIPE, "tensorboard", "--log-root",
                            str(tmp_path / "logs"), "--port", str(port), "--reload-interval",
                            "1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address, loader = cli.stdout.readline(), cli.stdout.readline()
        assert address.startswith(f"TensorBoard http://127.0.0.1:{port}/ serving {tmp_path}")
        assert loader.startswith("loader: fast (native data server (--load_fast=true)")
        expected = {run: [(step, pytest.approx(1.0 / (step + 1))) for step in range(points)]
                    for run, points in RUNS.items()}
        deadline = time.monotonic() + 60
        while (served := served_losses(f"http://127.0.0.1:{port}/")) != expected:
            assert time.monotonic() < deadline, f"not every point served within 60 s: {served}"
            time.sleep(0.5)

        (board,) = children(cli.pid)
        command = Path(f"/proc/{board}/cmdline").read_text().split("\0")
        assert command[1] == "-P" and command[2].endswith("tensorboard_frontend.py")
        assert command[3] == "--load_fast=true"
        files = mapped_files(board)
        assert any("/grpc/_cython/cygrpc" in path for path in files)  # talks to the data server
        assert not loads_tensorflow(files), sorted(p for p in files if "/tensorflow/" in p)
        assert not loads_tensorflow(mapped_files(cli.pid))
        servers = [Path(f"/proc/{pid}/cmdline").read_text() for pid in children(board)]
        assert any("tensorboard_data_server" in server for server in servers), servers
    finally:
        cli.terminate()
        cli.wait(timeout=20)


def test_cli_takes_the_flags_kubeflows_controller_passes():
    """Kubeflow's tensorboard-controller runs ``/usr/local/bin/tensorboard --logdir=PATH
    --bind_all`` in its image; tbpipe's TensorBoard image points that path at ``tbpipe
    tensorboard``, which reads both flags as its own."""
    from tbpipe.pipelines.cli.main import build_parser

    args = build_parser().parse_args(["tensorboard", "--logdir=/tensorboard_logs/", "--bind_all"])
    assert (args.log_root, args.host, args.port) == ("/tensorboard_logs/", "0.0.0.0", 6006)
    args = build_parser().parse_args(["tensorboard", "--log-root", "s3://b/logs"])
    assert (args.log_root, args.host) == ("s3://b/logs", "127.0.0.1")
