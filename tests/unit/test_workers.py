"""Multi-worker training: the worker contract, the local set of processes, a real 2-worker fit."""

import json
import os
import re
import signal
import sys
import textwrap
import time

import pytest

from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.training.config import TrainConfig
from tbpipe.components.training.distributed import (
    WorkerCluster,
    run_local_workers,
    tf_config_for,
    worker_cluster,
)
from tbpipe.components.training.worker import WorkerTask, run_fit_step, run_worker
from tests.helpers import read_scalars, read_tags, write_train_val

HOSTS = "w-0.svc:2222,w-1.svc:2222,w-2.svc:2222"


def test_cluster_from_hosts_and_indexed_job():
    cluster = worker_cluster({"TBPIPE_WORKER_HOSTS": HOSTS, "JOB_COMPLETION_INDEX": "2",
                              "TBPIPE_WORKER_INDEX": "0"})  # the Indexed Job's index wins
    assert (cluster.num_workers, cluster.index, cluster.rank, cluster.is_chief) == (3, 2, 2, False)
    assert json.loads(cluster.tf_config()) == {
        "cluster": {"worker": ["w-0.svc:2222", "w-1.svc:2222", "w-2.svc:2222"]},
        "task": {"type": "worker", "index": 2}}
    first = worker_cluster({"TBPIPE_WORKER_HOSTS": HOSTS, "TBPIPE_WORKER_INDEX": "0"})
    assert first.is_chief and first.index == 0


def test_tf_config_wins_and_names_the_chief():
    own = json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"]},
                      "task": {"type": "worker", "index": 0}})
    cluster = worker_cluster({"TF_CONFIG": own, "TBPIPE_WORKER_HOSTS": HOSTS,
                              "JOB_COMPLETION_INDEX": "1"})
    assert (cluster.num_workers, cluster.rank, cluster.is_chief) == (3, 1, False)
    chief = WorkerCluster({"chief": ["c:1"], "worker": ["a:1"]}, "chief", 0)
    assert chief.is_chief and chief.rank == 0
    assert worker_cluster({"TF_CONFIG": tf_config_for(["h:1", "h:2"], 0)}).is_chief


@pytest.mark.parametrize(("environ", "says"), [
    ({}, "needs TF_CONFIG or TBPIPE_WORKER_HOSTS"),
    ({"TBPIPE_WORKER_HOSTS": HOSTS}, "TBPIPE_WORKER_INDEX=''"),
    ({"TBPIPE_WORKER_HOSTS": HOSTS, "JOB_COMPLETION_INDEX": "3"}, "from 0 to 2"),
    ({"TBPIPE_WORKER_HOSTS": "w-0.svc,w-1.svc:1", "TBPIPE_WORKER_INDEX": "0"}, "not host:port"),
    ({"TF_CONFIG": "{not json"}, "TF_CONFIG: not a cluster and task"),
    ({"TF_CONFIG": tf_config_for(["h:1"], 1)}, "task worker 1 is not"),
])
def test_cluster_errors_name_the_variable(environ, says):
    with pytest.raises(InputError, match=re.escape(says)):
        worker_cluster(environ)


def test_task_file_round_trip_and_errors(tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, workers=3, checkpoint_dir="gs://b/ckpt")
    task = WorkerTask("train", config, "gs://b/train", "gs://b/val", "gs://b/model",
                      "gs://b/logs/e/r/train", result_uri="gs://b/result.json")
    assert WorkerTask.from_json(task.to_json(), "task.json") == task
    scratch = task.with_outputs(str(tmp_path))
    assert scratch.config.checkpoint_dir == str(tmp_path / "ckpt") and not scratch.result_uri
    assert scratch.log_dir == str(tmp_path / "logs" / "train")
    bad = json.loads(task.to_json())
    bad["config"]["workers"] = 0
    with pytest.raises(InputError, match=r"t.json: workers=0: must be a positive integer"):
        WorkerTask.from_json(json.dumps(bad).encode(), "t.json")
    with pytest.raises(InputError, match=r"t.json: not a tbpipe worker task"):
        WorkerTask.from_json(b'{"step": "predict"}', "t.json")


def test_worker_refuses_a_cluster_of_another_size(tmp_path):
    task = WorkerTask("train", TrainConfig(workers=2), "t", "v", "m", "l")
    (tmp_path / "task.json").write_bytes(task.to_json())
    with pytest.raises(InputError, match="task is for 2 workers, the cluster has 3"):
        run_worker(str(tmp_path / "task.json"), {"TBPIPE_WORKER_HOSTS": HOSTS,
                                                 "TBPIPE_WORKER_INDEX": "1"})


def test_workers_setting_is_checked_once():
    with pytest.raises(InputError, match="workers=0: must be a positive integer"):
        TrainConfig(workers=0)
    from tbpipe.pipelines.training import PipelineParams

    with pytest.raises(InputError, match="--workers=-2"):
        PipelineParams(workers=-2).validate()


def test_compile_workers_sets_the_pipeline_default_passed_to_train_and_finetune(tmp_path,
                                                                               capsys):
    import yaml

    from tbpipe.pipelines.cli.main import main

    out = tmp_path / "p.yaml"
    assert main(["compile", "--workers", "4", "--gpu-count", "2", "--package", str(out)]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["workers"]["defaultValue"] == 4
    text = out.read_text()
    # train at the top, finetune in both finetune branches: all take the pipeline's parameter
    assert len(re.findall(r"\n +workers:\n +componentInputParameter: workers\n", text)) == 1
    assert len(re.findall(r"\n +workers:\n +componentInputParameter: pipelinechannel--workers",
                          text)) == 2
    assert main(["compile", "--workers", "0", "--package", str(out)]) != 0
    assert "--workers=0: must be a positive integer" in capsys.readouterr().err


def test_workers_flag_and_params_file(tmp_path):
    from tbpipe.pipelines.cli.flags import params_from_args
    from tbpipe.pipelines.cli.main import build_parser

    (tmp_path / "p.yaml").write_text("workers: 3\nbatch_size: 16\n")
    for command in ("run", "submit"):
        args = build_parser().parse_args([command, "--params-file", str(tmp_path / "p.yaml")])
        assert params_from_args(args).workers == 3
        args = build_parser().parse_args([command, "--params-file", str(tmp_path / "p.yaml"),
                                          "--workers", "2"])
        assert params_from_args(args).workers == 2  # the flag wins


def test_on_a_cluster_the_step_calls_the_cluster_launcher(tmp_path, monkeypatch):
    """The seam to the cluster launcher (another module), with a stand-in for it."""
    import types

    calls = []

    def launch_workers(command, env, workers, placement, step, progress):  # the stand-in
        task = WorkerTask.from_json(open(command[-1], "rb").read(), command[-1])
        calls.append((command[1:3], workers, placement, step, task))
        progress("chief: epoch 1/1")
        result = {"metrics": {"loss": 0.5}, "epochs_run": 1, "resumed_from_epoch": 0,
                  "replicas": workers}
        open(task.result_uri, "w").write(json.dumps(result))

    standin = types.ModuleType("tbpipe.components.training.launcher")
    standin.launch_workers = launch_workers
    monkeypatch.setitem(sys.modules, "tbpipe.components.training.launcher", standin)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    ckpt = tmp_path / "ckpt"
    task = WorkerTask("train", TrainConfig(workers=4, checkpoint_dir=str(ckpt)), "gs://b/t",
                      "gs://b/v", "gs://b/m", "gs://b/logs/e/r/train")
    lines = []
    result = run_fit_step(task, placement='{"gpu_count": 2}', progress=lines.append)
    (module, workers, placement, step, sent), = calls
    assert module == ["-m", "tbpipe.components.training.worker"]
    assert (workers, placement, step) == (4, '{"gpu_count": 2}', "train")
    assert sent.result_uri == str(ckpt / "workers" / "result.json")  # where the pods see it
    assert sent.config == task.config and sent.train_uri == "gs://b/t"
    assert result.replicas == 4 and lines == ["chief: epoch 1/1"]


# --- the local set, with plain Python processes standing in for TensorFlow workers ---------

def fake_worker(tmp_path, body: str) -> list[str]:
    """A worker command running ``body`` with ``index`` (from TF_CONFIG) and ``marker``."""
    script = tmp_path / "fake_worker.py"
    script.write_text("import json, os, signal, sys, time\n"
                      "index = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
                      f"marker = {str(tmp_path / 'attempted')!r}\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def test_a_failing_worker_stops_the_set_with_its_last_lines(tmp_path):
    command = fake_worker(tmp_path, """
        if index == 1:
            print("loading shard 3", flush=True)
            sys.exit("bad shard: truncated record")
        print("chief waiting in an all-reduce", flush=True)
        time.sleep(300)
    """)
    lines = []
    start = time.monotonic()
    with pytest.raises(TbpipeError) as caught:
        run_local_workers(command, {}, 2, lines.append)
    assert time.monotonic() - start < 30  # the chief, stuck, was stopped: no hang
    assert str(caught.value) == ("worker 1 of 2 exited with status 1; its last lines: "
                                 "loading shard 3 | bad shard: truncated record")
    assert lines == ["chief waiting in an all-reduce"]  # only the chief's lines are streamed


def test_a_killed_worker_restarts_the_set(tmp_path):
    command = fake_worker(tmp_path, """
        if not os.path.exists(marker):
            if index == 1:
                time.sleep(0.5)
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)  # a preempted node
            time.sleep(300)  # the chief waits on its dead peer
        print(f"worker {index} done", flush=True)
    """)
    lines = []
    run_local_workers(command, {}, 2, lines.append)
    assert lines[0] == ("worker 1 of 2 was killed by SIGKILL; restarting the set from the "
                        "chief's last checkpoint (1 of 2 restarts)")
    assert lines[-1] == "worker 0 done"


def test_killed_too_often_or_left_running_is_an_error(tmp_path):
    always_killed = fake_worker(tmp_path, """
        if index == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(300)
    """)
    with pytest.raises(TbpipeError, match="^worker 1 of 2 was killed by SIGKILL; its last "
                                          "lines: no output$"):
        run_local_workers(always_killed, {}, 2, lambda line: None, restarts=1)
    chief_done_peer_stuck = fake_worker(tmp_path, """
        if index == 1:
            time.sleep(300)
    """)
    with pytest.raises(TbpipeError, match="^worker 0 of 2 finished, but the set was still "
                                          "running 1 s later"):
        run_local_workers(chief_done_peer_stuck, {}, 2, lambda line: None, finish_grace_s=1)


# --- real TensorFlow workers ---------------------------------------------------------------

def _kill_worker_once(index: int, after: str, done: list):
    """A progress callback that SIGKILLs worker ``index`` (a child) when ``after`` appears."""
    def progress(line: str) -> None:
        if after in line and not done:
            for pid in os.listdir("/proc"):
                if pid.isdigit() and _is_worker(int(pid), index):
                    os.kill(int(pid), signal.SIGKILL)
                    done.append(int(pid))
    return progress


def _is_worker(pid: int, index: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/environ", "rb") as env:
            variables = dict(v.split(b"=", 1) for v in env.read().split(b"\0") if b"=" in v)
    except (OSError, ValueError):
        return False
    tf_config = variables.get(b"TF_CONFIG", b"")
    return parent == os.getpid() and bool(tf_config) and (
        json.loads(tf_config)["task"]["index"] == index)


@pytest.mark.slow
def test_two_workers_train_like_one_with_one_writer_and_survive_a_kill(tmp_path,
                                                                        monkeypatch):
    """2 workers x batch 8 = 1 worker x batch 16; worker 1 killed after epoch 1 -> resume.

    (One test for both: every start of a set costs two TensorFlow start-ups.)

    Tolerance: validation accuracy within 0.05 of the single worker's, loss within 25%.
    """
    train, val = write_train_val(tmp_path, n_train=96, n_val=32, shard_records=40)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the workers' scratch folders go here
    common = dict(epochs=2, learning_rate=0.01, seed=3, precision="float32")
    import keras

    # Layer names (the histogram tags) count per process: the single worker fits in this
    # process, after other tests' models, the workers in fresh ones (as every step does)
    keras.utils.clear_session()
    one = run_fit_step(WorkerTask(
        "train", TrainConfig(batch_size=16, checkpoint_dir=str(tmp_path / "c1"), **common),
        train, val, str(tmp_path / "m1"), str(tmp_path / "l1" / "train")))
    killed: list = []
    lines: list = []

    def progress(line: str) -> None:
        lines.append(line)
        kill(line)

    kill = _kill_worker_once(1, "checkpoint: epoch 1 saved", killed)
    two = run_fit_step(WorkerTask(
        "train", TrainConfig(batch_size=8, workers=2, checkpoint_dir=str(tmp_path / "c2"),
                             **common),
        train, val, str(tmp_path / "m2"), str(tmp_path / "l2" / "train")), progress=progress)

    assert killed and any("restarting the set" in line for line in lines)
    assert any(line.startswith("resuming from epoch 1") for line in lines)
    assert (two.epochs_run, two.resumed_from_epoch, two.replicas) == (2, 1, 2)
    assert two.metrics["val_accuracy"] == pytest.approx(one.metrics["val_accuracy"], abs=0.05)
    assert two.metrics["loss"] == pytest.approx(one.metrics["loss"], rel=0.25, abs=0.02)
    # One writer: the chief's events only; the other worker's scratch is gone, even the one
    # of the worker killed before it could remove it.
    assert [name for name in os.listdir(scratch) if name.startswith("tbpipe-")] == []
    def event_files(folder):
        return [name for name in os.listdir(folder) if "tfevents" in name]

    # the chief's files only: one per attempt (the killed one, the resumed one)
    assert len(event_files(tmp_path / "l2" / "train")) == 2 * len(
        event_files(tmp_path / "l1" / "train"))
    assert json.loads((tmp_path / "m2" / "model.json").read_text())["epochs"] == 2
    single, multi = read_tags(str(tmp_path / "l1" / "train")), read_tags(
        str(tmp_path / "l2" / "train"))
    extra = set(multi["scalars"]) - set(single["scalars"])
    assert extra == {"workers/samples_per_sec", "workers/samples_per_sec/worker-0",
                     "workers/samples_per_sec/worker-1"}
    for kind in ("histograms", "images", "tensors"):
        assert set(multi[kind]) == set(single[kind]), kind
    scalars = read_scalars(str(tmp_path / "l2" / "train"))
    for tag, points in scalars.items():  # the killed attempt's epoch 2 was purged
        steps = [step for step, _ in points]
        assert len(steps) == len(set(steps)), tag
    assert [s for s, _ in scalars["epoch/loss"]] == [6, 12]
    assert all(rate > 0 for _, rate in scalars["workers/samples_per_sec/worker-1"])
