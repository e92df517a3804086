"""s3:// end to end against a real local S3 server (moto): the pipeline, then TensorBoard."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.tensorboard.segments import COMPACTED_SUFFIX
from tests.helpers import event_file_parts, served_tensorboard

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def http_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return json.load(reply)
    except (urllib.error.URLError, OSError):
        return None


def scalar_points(base_url: str, run: str, tag: str) -> list:
    query = urllib.parse.urlencode({"run": run, "tag": tag})
    return http_json(f"{base_url}data/plugin/scalars/scalars?{query}") or []


@pytest.mark.slow
def test_pipeline_reads_and_logs_on_s3_and_tensorboard_serves_every_step(s3_server, s3_root,
                                                                         tmp_path):
    """``--data s3://.../data.csv --log-root s3://.../tb``, then ``tbpipe tensorboard`` on it."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    from tbpipe.pipelines.runners.local import run_pipeline
    from tbpipe.pipelines.training import PipelineParams

    digits = load_digits()
    table = pd.DataFrame(np.clip(digits.data[:400] * 16, 0, 255).astype(int),
                         columns=[f"pixel{i}" for i in range(64)])
    table.insert(0, "label", digits.target[:400])
    table.to_csv(tmp_path / "data.csv", index=False)
    data_uri = storage.join(s3_root, "data.csv")
    storage.upload_file(str(tmp_path / "data.csv"), data_uri)
    log_root = storage.join(s3_root, "tb")
    checkpoint_root = storage.join(s3_root, "checkpoints")
    params = PipelineParams(data=data_uri, log_root=log_root, checkpoint_root=checkpoint_root,
                            experiment="s3", run_name="r1", epochs=1, finetune="always",
                            finetune_epochs=1)
    result = run_pipeline(dataclasses.replace(params), pipeline_root=str(tmp_path / "kfp"))
    assert result.log_dir == storage.join(log_root, "s3", "r1")
    assert storage.exists(storage.join(log_root, "s3", "r1", "_run.json"))  # the run claim
    saved = storage.list_files(storage.join(checkpoint_root, "s3", "r1", "checkpoints"))
    assert {name.split("/")[0] for name in saved} == {"train", "finetune"}, saved
    for step in ("preprocess", "train", "evaluate", "finetune", "evaluate-finetuned"):
        events = [name for name in storage.list_files(storage.join(result.log_dir, step))
                  if "tfevents" in name]  # a finished step: its segments compacted into one
        assert len(events) == 1 and events[0].endswith(".compacted"), (step, events)

    expected = {"train": ("epoch/loss", 1), "finetune": ("epoch/loss", 1),
                "evaluate": ("eval/accuracy", 1), "evaluate-finetuned": ("eval/accuracy", 1)}
    with served_tensorboard(log_root, str(tmp_path / "tb.log")) as (_, base, printed):
        address, loader = printed
        assert base in address and log_root in address, address
        assert loader.startswith("loader: mirror") and "s3://" in loader, loader
        tags = wait_for_series(base, "s3/r1", expected, also=("preprocess",))
        runs = http_json(f"{base}data/runs") or []
        for step, (tag, count) in expected.items():
            assert tag in tags.get(f"s3/r1/{step}", {}), (step, sorted(tags))
            assert len(scalar_points(base, f"s3/r1/{step}", tag)) == count, step
        assert tags.get("s3/r1/preprocess"), sorted(tags)
        assert {f"s3/r1/{s}" for s in (*expected, "preprocess")} <= set(runs), runs


def wait_for_series(base_url: str, run: str, expected: dict[str, tuple[str, int]],
                    also: tuple[str, ...] = (), timeout: float = 90) -> dict:
    """Poll until every ``{run}/{step}`` of ``expected`` serves its tag with its point count
    (and the steps ``also`` are listed); the last scalar tags served, whole or not."""
    deadline = time.monotonic() + timeout
    tags: dict = {}
    while time.monotonic() < deadline:
        tags = http_json(f"{base_url}data/plugin/scalars/tags") or {}
        if all(f"{run}/{step}" in tags for step in (*expected, *also)) and all(
                len(scalar_points(base_url, f"{run}/{step}", tag)) == count
                for step, (tag, count) in expected.items()):
            break  # a tag shows while TensorBoard is still reading its run
        time.sleep(1)
    return tags


def wait_for_points(base_url: str, run: str, enough, timeout: float = 90) -> list:
    """Poll the scalars of ``run``/loss until ``enough(points)``; the last answer."""
    deadline = time.monotonic() + timeout
    points = []
    while time.monotonic() < deadline:
        points = scalar_points(base_url, run, "loss")
        if enough(points):
            break
        time.sleep(0.5)
    return points


def test_mirror_serves_finished_runs_and_a_live_one_then_stops_on_sigterm(s3_server, s3_root,
                                                                          tmp_path):
    """``tbpipe tensorboard --log-root s3://...``: the native data server on a local mirror."""
    steps = 40
    name = "events.out.tfevents.1700000000.host.1"
    _, segments, compacted = event_file_parts(str(tmp_path / "writer"), steps)
    finished = [f"exp/r{n}/{step}" for n in range(3) for step in ("train", "evaluate")]
    for run in finished:
        storage.write_bytes(storage.join(s3_root, run, name + COMPACTED_SUFFIX), compacted)
    live = storage.join(s3_root, "exp", "live", "train")
    storage.write_bytes(storage.join(live, f"{name}.000000"), segments[0])
    with served_tensorboard(s3_root, str(tmp_path / "tb.log"), lines=3) as (cli, base, printed):
        address, loader, mirror = printed
        assert base in address and s3_root in address, address
        assert loader.startswith("loader: mirror") and "s3://" in loader, loader
        assert mirror.startswith("mirror: ") and "removed at exit" in mirror, mirror
        folder = mirror.split()[1]
        assert os.path.isdir(folder)
        for run in finished:  # every step of every finished run, each once
            points = wait_for_points(base, run, lambda p: len(p) >= steps)
            assert [p[1] for p in points] == list(range(steps)), run
        first = wait_for_points(base, "exp/live/train", lambda p: len(p) > 0)
        assert 0 < len(first) < steps, first  # segment 0 only: the run is writing
        for seq in range(1, len(segments)):  # the writer publishes the rest
            storage.write_bytes(storage.join(live, f"{name}.{seq:06d}"), segments[seq])
        points = wait_for_points(base, "exp/live/train", lambda p: len(p) >= steps)
        assert [p[1] for p in points] == list(range(steps))  # new points, each once
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) is not None  # TensorBoard and the sync thread stop
        assert not os.path.exists(folder)  # the temporary mirror is removed
