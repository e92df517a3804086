"""gs:// end to end against a real local GCS server: live logs, outages, real TensorBoard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.tensorboard.sink import ATTEMPT_DEADLINE_S
from tbpipe.pipelines.runners.tensorboard import start_tensorboard
from tests.helpers import TBPIPE, free_port, read_scalars

pytestmark = [pytest.mark.integration, pytest.mark.gcs]

STEPS = 20_000
LOGGER = """
import sys, time
import numpy as np
from tbpipe.components.common.tensorboard.sink import remote_writer
uri, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
compact = sys.argv[4] == "compact"
rng = np.random.default_rng(0)
slowest = 0.0
with remote_writer(uri, flush_secs=1, close_timeout=60, compact=compact) as writer:
    for step in range(steps):
        started = time.monotonic()
        writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_scalar("accuracy", step / steps, step)
        if step % 100 == 0:
            writer.add_histogram("weights", rng.normal(size=128), step)
        slowest = max(slowest, time.monotonic() - started)
        if step % 10 == 9:
            time.sleep(pause)
        if step % 2000 == 0:
            print(f"step {step}", flush=True)
print(f"done slowest_add={slowest:.3f} unpublished={writer.report.unpublished_bytes}",
      flush=True)
"""


def start_logger(uri: str, steps: int = STEPS, pause: float = 0.01,
                 compact: bool = True) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", LOGGER, uri, str(steps), str(pause),
                             "compact" if compact else "segments"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})


def finish(child: subprocess.Popen, timeout: float = 180) -> tuple[str, str]:
    try:
        out, err = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("the logging run hung")
    assert child.returncode == 0, err[-3000:]
    return out, err


def http_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.load(reply)
    except urllib.error.HTTPError:
        return None


def scalar_points(base_url: str, run: str, tag: str) -> list:
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return http_json(f"{base_url}data/plugin/scalars/scalars?{query}") or []


TB_FLAGS = ("--samples_per_plugin=scalars=100000",)


def test_long_run_is_watched_live(gcs_emulator, gcs_root, tmp_path):
    run_dir = storage.join(gcs_root, "exp", "live", "train")
    port = free_port()
    with open(tmp_path / "tb.log", "w") as log, start_tensorboard(
            gcs_root, port=port, reload_interval=1, extra_args=TB_FLAGS, output=log) as tb:
        assert tb.loader.name == "mirror"  # gs:// on an emulator: the data server on a mirror
        # segments only, as a run that is still writing shows them (the mirror appends each
        # new segment to one local file); tests/unit/test_tensorboard_mirror.py has segments
        # replaced by the compacted object, test_fast_loader_reads_a_run the compacted run
        child = start_logger(run_dir, compact=False)
        seen_while_running = []
        while child.poll() is None:
            count = len(scalar_points(tb.url, "exp/live/train", "loss"))
            if child.poll() is None:
                seen_while_running.append(count)
            time.sleep(1)
        out, _ = finish(child)
        print("points seen while the run went on:", seen_while_running)
        assert any(0 < n < STEPS for n in seen_while_running), seen_while_running
        assert seen_while_running == sorted(seen_while_running)  # only ever grows
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            points = scalar_points(tb.url, "exp/live/train", "loss")
            if len(points) == STEPS:
                break
            time.sleep(1)
        assert [p[1] for p in points] == list(range(STEPS))
        tags = http_json(f"{tb.url}data/plugin/histograms/tags")
        assert "weights" in tags["exp/live/train"]
    assert "unpublished=0" in out
    served = (tmp_path / "tb.log").read_text()  # the frontend drops TensorBoard's no-TF notice
    assert "TensorBoard " in served and "TensorFlow installation not found" not in served


def test_outage_mid_run_loses_nothing_and_never_hangs(gcs_emulator, gcs_root, tmp_path):
    run_dir = storage.join(gcs_root, "exp", "outage", "train")
    child = start_logger(run_dir)
    try:
        assert child.stdout.readline().startswith("step 0")
        time.sleep(3)
        with gcs_emulator.outage():  # longer than one publish attempt's retry deadline
            time.sleep(ATTEMPT_DEADLINE_S + 2)
    finally:
        gcs_emulator.start()
    out, err = finish(child)
    assert "cannot publish" in err and "published again" in err  # the outage hit the sink
    slowest = float(out.split("slowest_add=")[1].split()[0])
    assert slowest < 1.0, out  # add_scalar never waited for storage
    assert "unpublished=0" in out
    steps = [s for s, _ in read_scalars(str(gcs_emulator.download(run_dir, tmp_path)))["loss"]]
    assert steps == list(range(STEPS))


@pytest.mark.parametrize("compact", [False, True], ids=["segments", "compacted"])
def test_fast_loader_reads_a_run(gcs_emulator, gcs_root, tmp_path, compact):
    run_dir = storage.join(gcs_root, "exp", "fast", "train")
    finish(start_logger(run_dir, steps=3000, pause=0.005, compact=compact))
    objects = storage.list_files(run_dir)
    assert len(objects) == 1 if compact else len(objects) >= 3, objects
    local_root = tmp_path / "logs"
    gcs_emulator.download(gcs_root, local_root)
    with open(tmp_path / "tb.log", "w") as log, start_tensorboard(
            str(local_root), port=free_port(), extra_args=TB_FLAGS, output=log) as tb:
        assert tb.loader.name == "fast"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            points = scalar_points(tb.url, "exp/fast/train", "loss")
            if len(points) == 3000:
                break
            time.sleep(1)
    assert [p[1] for p in points] == list(range(3000))  # each step once


def test_python_loader_started_after_compaction_reads_every_step_once(gcs_emulator, gcs_root,
                                                                      tmp_path):
    run_dir = storage.join(gcs_root, "exp", "done", "train")
    finish(start_logger(run_dir, steps=3000, pause=0.005))
    assert len(storage.list_files(run_dir)) == 1
    with open(tmp_path / "tb.log", "w") as log, start_tensorboard(
            gcs_root, port=free_port(), loader="python", reload_interval=1,
            extra_args=TB_FLAGS, output=log) as tb:
        assert tb.loader.name == "python"  # asked for: auto picks the mirror here
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            points = scalar_points(tb.url, "exp/done/train", "loss")
            if len(points) >= 3000:
                break
            time.sleep(1)
    assert [p[1] for p in points] == list(range(3000))


def test_cli_serves_a_gs_root_and_says_which_loader(gcs_emulator, gcs_root):
    finish(start_logger(storage.join(gcs_root, "exp", "cli", "train"), steps=50, pause=0))
    port = free_port()
    cli = subprocess.Popen([*TBPIPE, "tensorboard", "--log-root",
                            gcs_root, "--port", str(port)], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
    try:
        address, loader = cli.stdout.readline(), cli.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in address and gcs_root in address
        assert loader.startswith("loader: mirror") and "STORAGE_EMULATOR_HOST" in loader
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            tags = http_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags") or {}
            if "exp/cli/train" in tags:
                break
            time.sleep(1)
        assert {"loss", "accuracy"} <= set(tags["exp/cli/train"])
    finally:
        cli.terminate()
        assert cli.wait(timeout=20) is not None


def test_missing_bucket_is_one_clear_line(gcs_emulator):
    proc = subprocess.run([*TBPIPE, "tensorboard", "--log-root",
                           "gs://no-such-bucket-tbpipe/logs", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "tbpipe: error: gs://no-such-bucket-tbpipe/logs: not found; check that bucket "
        "'no-such-bucket-tbpipe' exists and the path is right"]


@pytest.mark.slow
def test_pipeline_reads_and_logs_on_gcs(gcs_emulator, gcs_root, tmp_path):
    """The whole pipeline with --data gs://... and --log-root gs://..., then TensorBoard."""
    import dataclasses

    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    from tbpipe.pipelines.runners.local import run_pipeline
    from tbpipe.pipelines.training import PipelineParams

    digits = load_digits()
    table = pd.DataFrame(np.clip(digits.data[:600] * 16, 0, 255).astype(int),
                         columns=[f"pixel{i}" for i in range(64)])
    table.insert(0, "label", digits.target[:600])
    table.to_csv(tmp_path / "digits.csv", index=False)
    data_uri = storage.join(gcs_root, "data", "digits.csv")
    storage.upload_file(str(tmp_path / "digits.csv"), data_uri)
    log_root = storage.join(gcs_root, "logs")
    params = PipelineParams(data=data_uri, log_root=log_root, experiment="gcs", run_name="r1",
                            epochs=2, finetune="always", finetune_epochs=1)
    result = run_pipeline(dataclasses.replace(params), pipeline_root=str(tmp_path / "kfp"))
    assert result.log_dir == storage.join(log_root, "gcs", "r1")

    expected = {"train": ("epoch/loss", 2), "finetune": ("epoch/loss", 1),
                "evaluate": ("eval/accuracy", 1), "evaluate-finetuned": ("eval/accuracy", 1)}
    with open(tmp_path / "tb.log", "w") as log, start_tensorboard(
            log_root, port=free_port(), extra_args=TB_FLAGS, output=log) as tb:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tags = http_json(f"{tb.url}data/plugin/scalars/tags") or {}
            if all(f"gcs/r1/{step}" in tags for step in (*expected, "preprocess")) and all(
                    len(scalar_points(tb.url, f"gcs/r1/{step}", tag)) == count
                    for step, (tag, count) in expected.items()):
                break  # a tag shows while TensorBoard is still reading its run: wait for all
            time.sleep(1)
        assert tags.get("gcs/r1/preprocess"), sorted(tags)
        for step, (tag, count) in expected.items():
            assert tag in tags.get(f"gcs/r1/{step}", {}), (step, sorted(tags))
            assert len(scalar_points(tb.url, f"gcs/r1/{step}", tag)) == count, step
    for step in (*expected, "preprocess"):  # finished steps: one event object each
        events = [n for n in storage.list_files(storage.join(log_root, "gcs", "r1", step))
                  if "tfevents" in n]
        assert len(events) == 1, (step, events)
