"""``--profile-batch A,B``: a TensorFlow profile in the step's log folder, served by TensorBoard."""

from __future__ import annotations

import gzip
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tbpipe.components.common.errors import SettingError
from tbpipe.components.training.config import (
    MAX_PROFILE_BATCHES,
    FitConfig,
    ProfileBatches,
    TrainConfig,
)
from tests.helpers import free_port, read_scalars, write_train_val


@pytest.mark.parametrize(("text", "first", "last"), [
    ("", 0, 0), ("2,3", 2, 3), (" 4 , 4 ", 4, 4), ("7", 7, 7),
    (f"1,{MAX_PROFILE_BATCHES}", 1, MAX_PROFILE_BATCHES)])
def test_profile_batch_is_parsed_once(text, first, last):
    config = FitConfig(profile_batch=text)
    assert isinstance(config.profile_batch, ProfileBatches)
    assert (config.profile_batch.first, config.profile_batch.last) == (first, last)
    assert bool(config.profile_batch) == bool(first)
    assert ProfileBatches(config.profile_batch) is config.profile_batch


@pytest.mark.parametrize("text", ["0,3", "5,3", "-1,2", "a,b", "1,2,3", "1.5,2", "٣,٤",
                                  f"1,{MAX_PROFILE_BATCHES + 1}", "9" * 4000, ","])
def test_a_bad_profile_batch_is_one_line_naming_the_flag(text):
    with pytest.raises(SettingError) as caught:
        FitConfig(profile_batch=text)
    line = str(caught.value)
    assert line.startswith("--profile-batch=") and "\n" not in line
    assert "1 <= A <= B" in line


def plugin_json(url: str) -> object:
    """GET a profile plugin route: JSON, gzipped by some routes (Content-Encoding)."""
    with urllib.request.urlopen(url, timeout=30) as reply:
        body = reply.read()
        if reply.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    return json.loads(body)


def xplanes(log_dir: Path) -> list[Path]:
    return sorted(log_dir.glob("plugins/profile/*/*.xplane.pb"))


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """A 1-epoch fit of 4 batches with batches 2-3 profiled, under a log root of one run."""
    from tbpipe.components.training.core import train_model

    root = tmp_path_factory.mktemp("profile")
    data = write_train_val(root / "data", shard_records=24)
    log_dir = root / "logs" / "exp" / "run-1" / "train"
    train_model(*data, str(root / "model"), str(log_dir),
                TrainConfig(epochs=1, batch_size=16, seed=3, profile_batch="2,3",
                            histogram_every=0))
    return root / "logs", log_dir


def test_train_writes_the_profile_into_its_log_folder(profiled):
    _, log_dir = profiled
    (xplane,) = xplanes(log_dir)
    assert xplane.stat().st_size > 1000
    assert [s for s, _ in read_scalars(str(log_dir))["batch/loss"]] == [1, 2, 3, 4]


def test_tensorboard_lists_the_profile_run(profiled):
    """The Profile tab's plugin (tensorboard-plugin-profile) lists the run and its tools."""
    pytest.importorskip("xprof")
    from tbpipe.pipelines.runners.tensorboard import start_tensorboard

    log_root, log_dir = profiled
    session = xplanes(log_dir)[0].parent.name
    expected = f"exp/run-1/train/{session}"
    with start_tensorboard(str(log_root), port=free_port(), reload_interval=1) as server:
        deadline = time.monotonic() + 60
        while expected not in (runs := plugin_json(server.url + "data/plugin/profile/runs")):
            assert time.monotonic() < deadline, f"the profile plugin lists {runs}"
            time.sleep(0.5)
        query = urllib.parse.urlencode({"run": expected})
        tools = plugin_json(f"{server.url}data/plugin/profile/run_tools?{query}")
        assert {"overview_page", "op_profile"} <= set(tools), tools  # the xplane was read
        assert any(tool.startswith("trace_viewer") for tool in tools), tools


def test_a_resumed_fit_profiles_what_is_left_and_a_range_never_reached_says_so(tmp_path,
                                                                            capsys):
    from tbpipe.components.training.tensorboard_callback import BatchProfiler

    resumed = BatchProfiler(str(tmp_path / "a"), first=2, last=3, initial_step=2)
    for batch in range(3):  # global batches 3, 4, 5
        resumed.on_train_batch_begin(batch)
        resumed.on_train_batch_end(batch)
    resumed.on_train_end()
    assert resumed.profiled == [3] and len(xplanes(tmp_path / "a")) == 1
    short = BatchProfiler(str(tmp_path / "b"), first=10, last=12)
    for batch in range(4):
        short.on_train_batch_begin(batch)
        short.on_train_batch_end(batch)
    short.on_train_end()
    assert short.profiled == [] and not (tmp_path / "b").exists()
    assert "the fit ended at global batch 4, before batch 10; no profile" in \
        capsys.readouterr().out


@pytest.mark.s3
def test_on_a_store_the_profile_is_uploaded_with_the_logs(s3_root):
    """The profile goes to the writer's local staging folder; closing the writer uploads it.

    (``open_writer`` gives a store's log dir this writer; no compaction: it waits 10 s.)
    """
    from tbpipe.components.common import storage
    from tbpipe.components.common.tensorboard.sink import remote_writer
    from tbpipe.components.training.tensorboard_callback import BatchProfiler

    log_dir = storage.join(s3_root, "exp/run/train")
    with remote_writer(log_dir, compact=False) as writer:
        profiler = BatchProfiler(writer.logdir, first=1, last=1)
        profiler.on_train_batch_begin(0)
        writer.add_scalar("loss", 1.0, 1)
        profiler.on_train_batch_end(0)
        profiler.on_train_end()
    names = storage.list_files(log_dir)
    assert any(n.startswith("plugins/profile/") and n.endswith(".xplane.pb") for n in names), \
        names
