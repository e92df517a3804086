"""The servable export (saved_model/ of the selected model) and ``tbpipe predict``."""

import json
import os
import subprocess

import numpy as np
import pytest

from tbpipe.components.common.dataset import load_arrays
from tbpipe.components.common.serving import (
    OUTPUT_KEY,
    SIGNATURE,
    read_image,
    saved_model_path,
    top_classes,
)
from tbpipe.components.evaluation.report import tag_names
from tbpipe.components.selection.core import choose_model
from tests.helpers import TBPIPE, write_dataset
from tests.unit.test_evaluate import CLASSES, SHAPE, save_tiny_model

NAMES = ["zero", "one", "two", "three"]


@pytest.fixture(scope="module")
def best(tmp_path_factory):
    """A trained tiny model (class names in its model.json) selected into ``best``."""
    root = tmp_path_factory.mktemp("serving")
    trained = save_tiny_model(root / "trained")
    meta_path = os.path.join(trained, "model.json")
    meta = json.loads(open(meta_path).read())
    with open(meta_path, "w") as handle:
        json.dump({**meta, "class_names": NAMES}, handle)
    summary = choose_model(trained, 0.9, str(root / "best"))
    assert summary["final_model"] == "trained"
    return str(root / "best")


@pytest.fixture(scope="module")
def test_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "test"
    write_dataset(str(root), n=12, shape=SHAPE, classes=CLASSES, seed=5)
    return load_arrays(str(root))


def keras_probs(folder, images_uint8):
    import keras

    model = keras.saving.load_model(os.path.join(folder, "model.keras"), compile=False)
    return model.predict(images_uint8.astype(np.float32) / 255.0, verbose=0)


def to_uint8(images):
    return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)


def test_choose_model_writes_the_saved_model(best):
    assert sorted(os.listdir(best)) == ["model.json", "model.keras", "saved_model"]
    assert os.listdir(os.path.join(best, "saved_model")) == ["1"]
    assert os.path.isfile(os.path.join(saved_model_path(best), "saved_model.pb"))
    assert not [n for n in os.listdir(os.path.dirname(best)) if n.endswith(".partial")]


@pytest.mark.parametrize("batch", [5, 1])
def test_serving_signature_matches_keras(best, test_images, batch):
    import tensorflow as tf

    images = to_uint8(test_images[0][:batch])
    serve = tf.saved_model.load(saved_model_path(best)).signatures[SIGNATURE]
    (spec,) = serve.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, *SHAPE]
    out = serve(tf.constant(images))[OUTPUT_KEY]
    assert out.dtype == tf.float32 and out.shape == (batch, CLASSES)
    np.testing.assert_allclose(out.numpy(), keras_probs(best, images), rtol=1e-5)


def test_logits_model_is_served_as_probabilities(tmp_path, test_images):
    import tensorflow as tf

    folder = save_tiny_model(tmp_path / "logits", softmax=False, epochs=0)
    choose_model(folder, 0.1, str(tmp_path / "best"))
    images = to_uint8(test_images[0][:3])
    serve = tf.saved_model.load(saved_model_path(str(tmp_path / "best"))).signatures[SIGNATURE]
    out = serve(tf.constant(images))[OUTPUT_KEY].numpy()
    expected = tf.nn.softmax(keras_probs(folder, images)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_predict_cli_names_the_keras_class(best, test_images, tmp_path):
    from PIL import Image

    images = to_uint8(test_images[0][:4])
    files = []
    for i, image in enumerate(images):
        path = tmp_path / f"digit{i}.png"
        picture = Image.fromarray(image[:, :, 0], "L")
        if i == 3:  # RGB and twice the size: predict converts to L and resizes to 8x8
            picture = picture.convert("RGB").resize((16, 16), Image.Resampling.NEAREST)
        picture.save(path)
        files.append(str(path))
    seen = np.stack([read_image(f, SHAPE) for f in files])
    np.testing.assert_array_equal(seen[:3], images[:3])  # PNG round trip at the model's size
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    files.insert(2, str(bad))
    proc = subprocess.run([*TBPIPE, "predict", "--model", best, "--top", "2", *files],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0]
    lines = proc.stdout.splitlines()
    assert len(lines) == 4
    expected = keras_probs(best, seen).argmax(axis=1)
    for line, path, k in zip(lines, [f for f in files if f != str(bad)], expected, strict=True):
        name, ranked = line.split(": ", 1)
        assert name == path
        entries = ranked.split(", ")
        assert len(entries) == 2
        assert entries[0].split(" ")[0] == NAMES[k]


def test_predict_cli_errors_are_one_line(tmp_path):
    proc = subprocess.run([*TBPIPE, "predict", "--model", str(tmp_path), "x.png"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "not a tbpipe Model" in proc.stderr


def test_top_classes_and_tag_names():
    probs = np.array([0.1, 0.6, 0.05, 0.25])
    assert top_classes(probs, NAMES, 3) == [("one", 0.6), ("three", 0.25), ("zero", 0.1)]
    assert tag_names(["cat", "red fox", "a/b", "", "cat"]) == ["cat", "red_fox", "a_b", "3",
                                                               "cat_4"]


@pytest.mark.parametrize("names", [("a", "b"), None])
def test_training_records_the_dataset_class_names(monkeypatch, names):
    from types import SimpleNamespace

    from tbpipe.components.common import model_format
    from tbpipe.components.training import fit

    saved = {}
    monkeypatch.setattr(model_format, "save_model_folder",
                        lambda model, uri, meta: saved.update(meta))
    info = SimpleNamespace(image_shape=(8, 8, 1), num_classes=2)
    if names:
        info.class_names = names
    plan = SimpleNamespace(train_info=info, precision="float32",
                           model=SimpleNamespace(count_params=lambda: 10))
    job = SimpleNamespace(base_epochs=0, train_uri="t", meta={}, model_uri="m")
    config = SimpleNamespace(epochs=1, learning_rate=0.1, batch_size=4, seed=0)
    fit._save(plan, job, config, {"loss": 1.0})
    assert saved.get("class_names") == (list(names) if names else None)
    assert saved["num_classes"] == 2
