import json
import os

import numpy as np
import pytest

from tbpipe.components.common.dataset import to_uint8
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import checkpoint_dir_for
from tbpipe.components.training.config import TrainConfig
from tbpipe.components.training.core import train_model
from tests.helpers import read_scalars, read_tags, synthetic_images, write_dataset, write_train_val


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_val(tmp_path_factory.mktemp("data"), shard_records=24)


@pytest.mark.parametrize(("shape", "classes", "flat"), [
    ((8, 8, 1), 10, 2 * 2 * 64),   # "same" padding: 8 -> 4 -> 2
    ((28, 28, 1), 10, 5 * 5 * 64),  # "valid" padding: 28 -> 26 -> 13 -> 11 -> 5
    ((8, 8, 3), 3, 2 * 2 * 64),
])
def test_build_cnn_shapes(shape, classes, flat):
    from tbpipe.components.training.model import build_cnn

    model = build_cnn(shape, classes, seed=1)
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, classes)
    assert model.get_layer(index=4).output.shape == (None, flat)
    probs = model.predict(np.zeros((2, *shape), np.float32), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert model.optimizer.__class__.__name__ == "Adam"
    assert model.loss == "sparse_categorical_crossentropy"


def test_build_cnn_is_seeded():
    from tbpipe.components.training.model import build_cnn

    first, again, other = (build_cnn((8, 8, 1), 4, seed=s).get_weights() for s in (3, 3, 4))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not np.array_equal(first[0], other[0])


def test_make_dataset_streams_records_in_order(data):
    from tbpipe.components.training.data import make_dataset

    batches = list(make_dataset(data[0], 16, shuffle=False, seed=0).as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [16, 16, 16, 16]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    expected_images, expected_labels = synthetic_images(64, seed=0)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert images.shape == (64, 8, 8, 1)
    np.testing.assert_array_equal(labels, expected_labels)  # three shards read in order
    np.testing.assert_allclose(images, to_uint8(expected_images) / 255.0, atol=1e-7)


def epoch_labels(dataset, batches_per_epoch):
    labels = [b[1] for b in dataset.as_numpy_iterator()]
    return [np.concatenate(labels[i:i + batches_per_epoch])
            for i in range(0, len(labels), batches_per_epoch)]


def test_make_dataset_shuffles_each_epoch_reproducibly(data):
    from tbpipe.components.training.data import make_dataset

    three = epoch_labels(make_dataset(data[0], 10, True, seed=5, num_epochs=3), 7)
    again = epoch_labels(make_dataset(data[0], 10, True, seed=5, num_epochs=3), 7)
    third_alone = epoch_labels(make_dataset(data[0], 10, True, seed=5, first_epoch=2), 7)
    other_seed = epoch_labels(make_dataset(data[0], 10, True, seed=6), 7)
    _, ordered = synthetic_images(64, seed=0)
    assert len(three) == 3
    for epoch in three:
        assert sorted(epoch) == sorted(ordered)
    assert all(np.array_equal(a, b) for a, b in zip(three, again, strict=True))
    np.testing.assert_array_equal(three[2], third_alone[0])
    assert not np.array_equal(three[0], three[1])
    assert not np.array_equal(three[0], other_seed[0])


def test_input_pipeline_set_up_does_not_grow_with_epochs(data):
    """A million epochs are set up as fast as two: each epoch is made when it is reached."""
    import time

    from tbpipe.components.training.data import fit_datasets

    start = time.monotonic()
    train, _ = fit_datasets(*data, 16, 5, range(3, 10**6), cache_max_mb=64)
    assert time.monotonic() - start < 10
    assert int(train.cardinality()) == 4 * (10**6 - 3)
    first = next(iter(train))[1].numpy()
    again = next(iter(fit_datasets(*data, 16, 5, range(3, 5), cache_max_mb=64)[0]))[1].numpy()
    np.testing.assert_array_equal(first, again)  # epoch 3's order, however many follow


def test_train_model_writes_model_and_logs(data, tmp_path):
    from tbpipe.components.common.model_format import load_model_folder

    log_dir, model_dir = str(tmp_path / "logs"), str(tmp_path / "model")
    result = train_model(*data, model_dir, log_dir,
                         TrainConfig(epochs=2, batch_size=16, learning_rate=0.01, seed=3))

    assert sorted(os.listdir(model_dir)) == ["model.json", "model.keras"]
    model, meta = load_model_folder(model_dir)
    assert meta["image_shape"] == [8, 8, 1] and meta["num_classes"] == 4
    assert meta["epochs"] == 2 and meta["source"] == "trained" and meta["learning_rate"] == 0.01
    assert model.output_shape == (None, 4)
    assert (result.epochs_run, result.resumed_from_epoch, result.replicas) == (2, 0, 1)
    assert set(result.metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}

    scalars = read_scalars(log_dir)
    assert [s for s, _ in scalars["batch/loss"]] == list(range(1, 9))  # 4 batches x 2 epochs
    for tag in ("epoch/loss", "epoch/accuracy", "epoch/val_loss", "epoch/val_accuracy",
                "epoch/learning_rate"):
        assert [s for s, _ in scalars[tag]] == [4, 8], tag  # global step of each epoch's end
    assert scalars["epoch/learning_rate"][0][1] == pytest.approx(0.01)
    assert scalars["epoch/val_accuracy"][-1][1] == pytest.approx(result.metrics["val_accuracy"])
    assert scalars["hparam/accuracy"][0][1] == pytest.approx(result.metrics["accuracy"])
    assert scalars["train/devices"] == [(1, 1.0)]
    tags = read_tags(log_dir)
    assert any(t.startswith("weights/") and t.endswith("kernel") for t in tags["histograms"])
    hparams = read_hparams(log_dir)
    assert hparams["epochs"] == 2 and hparams["batch_size"] == 16 and hparams["seed"] == 3
    assert hparams["learning_rate"] == pytest.approx(0.01)
    assert hparams["params"] == model.count_params()
    assert "batch/accuracy" in tags["scalars"]


def read_hparams(log_dir):
    """The hyper-parameters of the HParams session logged in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(log_dir)
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in info.hparams.items()}


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=0), dict(learning_rate=0.0),
                                 dict(learning_rate=-1e-3), dict(epochs=-2)])
def test_train_model_rejects_bad_settings(data, tmp_path, bad):
    with pytest.raises(InputError) as err:
        train_model(*data, str(tmp_path / "m"), str(tmp_path / "l"), TrainConfig(**bad))
    assert "\n" not in str(err.value) and next(iter(bad)) in str(err.value)
    assert not (tmp_path / "m").exists()


def test_train_model_rejects_mismatched_validation_data(data, tmp_path):
    write_dataset(str(tmp_path / "val3"), n=12, classes=3)
    with pytest.raises(InputError, match="do not match"):
        train_model(data[0], str(tmp_path / "val3"), str(tmp_path / "m"), str(tmp_path / "l"),
                    TrainConfig(epochs=1))
    with pytest.raises(InputError, match="not a tbpipe Dataset"):
        train_model(str(tmp_path), data[1], str(tmp_path / "m"), str(tmp_path / "l"),
                    TrainConfig(epochs=1))
    assert not (tmp_path / "m").exists()


def test_checkpoint_dir_for():
    assert checkpoint_dir_for("gs://b/logs", "gs://b/ck", "exp", "run-1", "train") == \
        "gs://b/ck/exp/run-1/checkpoints/train"
    with pytest.raises(InputError, match="run name"):
        checkpoint_dir_for("/tmp/l", "", "exp", "../x", "train")


@pytest.mark.parametrize(("log_root", "expected"), [
    ("gs://b/tb", "gs://b/tb-checkpoints"), ("gs://b/a/tb/", "gs://b/a/tb-checkpoints"),
    ("s3://b/tb", "s3://b/tb-checkpoints"), ("/mnt/logs/tb", "/mnt/logs/tb-checkpoints"),
])
def test_checkpoints_default_to_a_sibling_of_the_log_root(log_root, expected):
    directory = checkpoint_dir_for(log_root, "", "exp", "run-1", "train")
    assert directory == f"{expected}/exp/run-1/checkpoints/train"
    assert not directory.startswith(log_root.rstrip("/") + "/")  # outside TensorBoard's tree


@pytest.mark.parametrize("log_root", ["gs://bucket", "s3://bucket/", "/"])
def test_a_root_without_a_sibling_asks_for_a_checkpoint_root(log_root):
    with pytest.raises(InputError, match="pass checkpoint_root"):
        checkpoint_dir_for(log_root, "", "exp", "run-1", "train")
    assert checkpoint_dir_for(log_root, "gs://b/ck", "exp", "r", "train").startswith("gs://b/ck/")


def test_model_json_is_plain_json(data, tmp_path):
    from tbpipe.components.common.model_format import save_model_folder
    from tbpipe.components.training.model import build_cnn

    save_model_folder(build_cnn((8, 8, 1), 4, seed=0), str(tmp_path / "m"), {"epochs": 0})
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["format"] == "tbpipe.model.v1" and meta["epochs"] == 0
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp left behind
