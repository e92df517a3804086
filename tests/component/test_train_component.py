import json

import pytest
from kfp.dsl import Dataset, Metrics, Model

from tbpipe.components import finetune, train
from tests.helpers import read_scalars, write_dataset

WHERE = dict(experiment="exp", run_name="", job_name="job-3")


@pytest.fixture
def data(tmp_path):
    write_dataset(str(tmp_path / "train"), n=48, seed=0)
    write_dataset(str(tmp_path / "val"), n=16, seed=1)
    return Dataset(uri=str(tmp_path / "train")), Dataset(uri=str(tmp_path / "val"))


def test_train_then_finetune_components(tmp_path, data):
    logs, ckpts = tmp_path / "logs", tmp_path / "ckpts"
    model, metrics = Model(uri=str(tmp_path / "model")), Metrics(uri=str(tmp_path / "m1"))
    train.python_func(train_data=data[0], val_data=data[1], model=model, metrics=metrics,
                      log_root=str(logs), epochs=2, batch_size=16, learning_rate=0.01,
                      checkpoint_root=str(ckpts), **WHERE)

    assert metrics.metadata["epochs"] == 2
    assert set(metrics.metadata) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert model.metadata["val_accuracy"] == metrics.metadata["val_accuracy"]
    assert json.loads((tmp_path / "model" / "model.json").read_text())["epochs"] == 2
    state = json.loads((ckpts / "exp" / "job-3" / "checkpoints" / "train" / "state.json")
                       .read_text())
    assert state["epoch"] == 2
    scalars = read_scalars(str(logs / "exp" / "job-3" / "train"))
    assert scalars["epoch/val_accuracy"][-1][1] == pytest.approx(metrics.metadata["val_accuracy"])

    tuned, tuned_metrics = Model(uri=str(tmp_path / "tuned")), Metrics(uri=str(tmp_path / "m2"))
    finetune.python_func(model=model, train_data=data[0], val_data=data[1],
                         finetuned_model=tuned, metrics=tuned_metrics, log_root=str(logs),
                         epochs=1, freeze_layers=1, batch_size=16, **WHERE)

    meta = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert meta["source"] == "finetuned" and meta["epochs"] == 3 and meta["freeze_layers"] == 1
    assert tuned_metrics.metadata["epochs"] == 1
    # no checkpoint_root: checkpoints go beside the log root, outside TensorBoard's tree
    sibling = tmp_path / "logs-checkpoints"
    assert (sibling / "exp" / "job-3" / "checkpoints" / "finetune" / "state.json").exists()
    assert not (logs / "exp" / "job-3" / "checkpoints").exists()
    finetune_logs = read_scalars(str(logs / "exp" / "job-3" / "finetune"))
    assert finetune_logs["hparam/val_accuracy"][0][1] == pytest.approx(
        tuned_metrics.metadata["val_accuracy"])


def test_train_component_rejects_a_bad_run_name(tmp_path, data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.python_func(train_data=data[0], val_data=data[1],
                          model=Model(uri=str(tmp_path / "model")),
                          metrics=Metrics(uri=str(tmp_path / "m")), log_root=str(tmp_path),
                          experiment="exp", run_name="a/b", job_name="job", epochs=1)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train: error: run name 'a/b' is not allowed" in err[0]
    assert not (tmp_path / "model").exists()


def test_only_inputs_and_log_root_are_needed(tmp_path, data):
    """Experiment, run and job name default inside the component: the KFP job's name names
    the run (here the placeholder stays unfilled, as a backend might leave it, and the job's
    folder in the pipeline root names it)."""
    job = tmp_path / "pipeline-root" / "my-job-42" / "train"
    model, metrics = Model(uri=str(job / "model")), Metrics(uri=str(job / "metrics"))
    train.python_func(train_data=data[0], val_data=data[1], model=model, metrics=metrics,
                      log_root=str(tmp_path / "logs"), epochs=1, batch_size=16,
                      job_name="{{$.pipeline_job_name}}")
    assert read_scalars(str(tmp_path / "logs" / "default" / "my-job-42" / "train"))
    ckpt = tmp_path / "logs-checkpoints" / "default" / "my-job-42" / "checkpoints" / "train"
    assert ckpt.is_dir()
    assert json.loads((job / "model" / "model.json").read_text())["epochs"] == 1


def test_an_empty_log_root_is_one_line(tmp_path, data, capsys):
    model, metrics = Model(uri=str(tmp_path / "m")), Metrics(uri=str(tmp_path / "x"))
    with pytest.raises(SystemExit):
        train.python_func(train_data=data[0], val_data=data[1], model=model, metrics=metrics,
                          log_root="", run_name="r")
    assert "log_root is empty" in capsys.readouterr().err


def test_on_a_cluster_the_workers_get_the_store_uris_of_kfps_minio_artifacts(tmp_path,
                                                                             monkeypatch):
    """KFP's default store names artifacts ``minio://bucket/key``, which no filesystem library
    reads: the worker pods get ``s3://bucket/key`` (the cluster launch is replaced by a test
    double that records the task; tests/unit/test_launcher.py covers the launch itself)."""
    from tbpipe.components.training import worker
    from tbpipe.components.training.config import TrainResult

    tasks = []

    def launch_double(task, placement="", progress=None):
        tasks.append(task)
        return TrainResult({"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5},
                           1, 0, 2)

    monkeypatch.setattr(worker, "run_fit_step", launch_double)
    monkeypatch.setenv(worker.IN_CLUSTER_ENV, "10.0.0.1")
    inputs = {name: Dataset(uri=f"minio://mlpipeline/v2/artifacts/p/r/preprocess/{name}")
              for name in ("train_data", "val_data")}
    base = Model(uri="minio://mlpipeline/v2/artifacts/p/r/train/model")
    common = dict(log_root=str(tmp_path / "logs"), epochs=1, batch_size=16, workers=2,
                  checkpoint_root=str(tmp_path / "ckpts"), worker_placement='{"engine": "jobset"}',
                  **WHERE)
    train.python_func(**inputs, model=Model(uri=str(tmp_path / "model")),
                      metrics=Metrics(uri=str(tmp_path / "m1")), **common)
    finetune.python_func(**inputs, model=base, finetuned_model=Model(uri=str(tmp_path / "ft")),
                         metrics=Metrics(uri=str(tmp_path / "m2")), **common)

    prefix = "s3://mlpipeline/v2/artifacts/p/r/"
    assert [(t.train_uri, t.val_uri) for t in tasks] == [
        (prefix + "preprocess/train_data", prefix + "preprocess/val_data")] * 2
    assert tasks[1].base_model_uri == prefix + "train/model"
