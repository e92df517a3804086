import numpy as np
import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.finetuning.config import FinetuneConfig
from tbpipe.components.finetuning.core import finetune_model
from tbpipe.components.training.config import TrainConfig
from tbpipe.components.training.core import train_model
from tests.helpers import read_scalars, write_dataset
from tests.unit.test_train import read_hparams


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A model trained 1 epoch, its training data and validation data."""
    root = tmp_path_factory.mktemp("base")
    write_dataset(str(root / "train"), n=64, seed=0)
    write_dataset(str(root / "val"), n=32, seed=1)
    train_model(str(root / "train"), str(root / "val"), str(root / "model"), str(root / "logs"),
                TrainConfig(epochs=1, batch_size=16, learning_rate=0.01))
    return root


def test_finetune_freezes_trains_and_writes_a_new_model(base, tmp_path):
    from tbpipe.components.common.model_format import load_model_folder

    other = str(tmp_path / "other")
    write_dataset(other, n=48, seed=9)  # fine-tune on another data set of the same kind
    out, logs = str(tmp_path / "tuned"), str(tmp_path / "logs")
    result = finetune_model(str(base / "model"), other, str(base / "val"), out, logs,
                            FinetuneConfig(epochs=2, learning_rate=1e-3, freeze_layers=2,
                                           batch_size=16))

    before, _ = load_model_folder(str(base / "model"))
    after, meta = load_model_folder(out)
    assert meta["source"] == "finetuned" and meta["base_epochs"] == 1 and meta["epochs"] == 3
    assert meta["base_model"] == str(base / "model") and meta["freeze_layers"] == 2
    assert [layer.trainable for layer in after.layers[:3]] == [False, False, True]
    frozen, trained = before.layers[0].get_weights(), before.layers[2].get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(frozen, after.layers[0].get_weights(),
                                                       strict=True))
    assert not np.array_equal(trained[0], after.layers[2].get_weights()[0])
    assert result.epochs_run == 2 and set(result.metrics) >= {"accuracy", "val_accuracy"}

    scalars = read_scalars(logs)
    assert [s for s, _ in scalars["epoch/loss"]] == [3, 6]  # 48 examples / 16 per batch
    assert scalars["epoch/learning_rate"][0][1] == pytest.approx(1e-3)
    hparams = read_hparams(logs)
    assert hparams["base_model"] == str(base / "model") and hparams["freeze_layers"] == 2
    assert hparams["learning_rate"] == pytest.approx(1e-3)


def test_finetune_rejects_a_folder_that_is_not_a_model(base, tmp_path):
    with pytest.raises(InputError, match="not a tbpipe Model") as err:
        finetune_model(str(base / "train"), str(base / "train"), str(base / "val"),
                       str(tmp_path / "out"), str(tmp_path / "logs"), FinetuneConfig(epochs=1))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_finetune_rejects_a_broken_model_file(base, tmp_path):
    import shutil

    shutil.copytree(base / "model", tmp_path / "model")
    (tmp_path / "model" / "model.keras").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot load the Keras model"):
        finetune_model(str(tmp_path / "model"), str(base / "train"), str(base / "val"),
                       str(tmp_path / "out"), str(tmp_path / "logs"), FinetuneConfig(epochs=1))


@pytest.mark.parametrize(("shape", "classes"), [((10, 10, 1), 4), ((8, 8, 1), 3)])
def test_finetune_rejects_data_the_model_does_not_fit(base, tmp_path, shape, classes):
    write_dataset(str(tmp_path / "t"), n=12, shape=shape, classes=classes)
    write_dataset(str(tmp_path / "v"), n=12, shape=shape, classes=classes, seed=1)
    with pytest.raises(InputError, match="model takes") as err:
        finetune_model(str(base / "model"), str(tmp_path / "t"), str(tmp_path / "v"),
                       str(tmp_path / "out"), str(tmp_path / "logs"), FinetuneConfig(epochs=1))
    assert str(list(shape)) in str(err.value) or str(shape) in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("bad", "match"), [(dict(freeze_layers=7), "freeze fewer"),
                                            (dict(freeze_layers=-1), "freeze_layers"),
                                            (dict(learning_rate=0.0), "learning_rate"),
                                            (dict(epochs=0), "epochs")])
def test_finetune_rejects_bad_settings(base, tmp_path, bad, match):
    with pytest.raises(InputError, match=match):
        finetune_model(str(base / "model"), str(base / "train"), str(base / "val"),
                       str(tmp_path / "out"), str(tmp_path / "logs"), FinetuneConfig(**bad))

