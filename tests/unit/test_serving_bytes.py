"""The bytes signature, TF Serving's warm-up requests, the KServe request, the serving check."""

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tbpipe.components.common.serving import (
    BYTES_SIGNATURE,
    OUTPUT_KEY,
    SIGNATURE,
    WARMUP_FILE,
    encode_png,
    read_image,
    saved_model_path,
)
from tbpipe.components.promotion import publish
from tbpipe.components.promotion.config import PromoteConfig
from tbpipe.components.promotion.core import promote_model
from tbpipe.components.promotion.serving_check import ServingCheckFailed, check_serving
from tbpipe.components.selection.core import choose_model
from tests.helpers import synthetic_images
from tests.unit.test_evaluate import CLASSES, SHAPE, save_tiny_model

KSERVE_REQUEST = Path(__file__).resolve().parents[2] / "deploy" / "kserve" / "predict-bytes.json"
NAMES = ["zero", "one", "two", "three"]


@pytest.fixture(scope="module")
def best(tmp_path_factory):
    """A trained tiny model with class names, selected (so exported) into ``best``."""
    root = tmp_path_factory.mktemp("serving-bytes")
    trained = save_tiny_model(root / "trained", epochs=3)
    meta_path = os.path.join(trained, "model.json")
    meta = json.loads(open(meta_path).read())
    with open(meta_path, "w") as handle:
        json.dump({**meta, "class_names": NAMES}, handle)
    choose_model(trained, 0.9, str(root / "best"))
    return str(root / "best")


@pytest.fixture(scope="module")
def signatures(best):
    import tensorflow as tf

    return tf.saved_model.load(saved_model_path(best)).signatures


@pytest.fixture(scope="module")
def images():
    pixels, labels = synthetic_images(12, SHAPE, CLASSES, seed=9)
    return np.rint(pixels * 255).astype(np.uint8), labels


def probs(signatures, signature, batch):
    import tensorflow as tf

    return signatures[signature](tf.constant(batch))[OUTPUT_KEY].numpy()


def jpeg(image, size=None, quality=95):
    from PIL import Image

    picture = Image.fromarray(image[:, :, 0], "L").convert("RGB")  # colour: decoded to grey
    if size:
        picture = picture.resize(size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_png_and_jpeg_bytes_give_the_uint8_signatures_class(signatures, images):
    import tensorflow as tf

    pixels, _ = images
    (spec,) = signatures[BYTES_SIGNATURE].structured_input_signature[1].values()
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    expected = probs(signatures, SIGNATURE, pixels)
    png = probs(signatures, BYTES_SIGNATURE, [encode_png(p) for p in pixels])
    np.testing.assert_allclose(png, expected, atol=1e-6)  # lossless, same size: same pixels
    jpegs = probs(signatures, BYTES_SIGNATURE, [jpeg(p) for p in pixels])
    bigger = probs(signatures, BYTES_SIGNATURE, [jpeg(p, (32, 32)) for p in pixels])
    for got in (jpegs, bigger):  # lossy, resized: the same class
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    with pytest.raises(tf.errors.InvalidArgumentError):
        probs(signatures, BYTES_SIGNATURE, [b"not an image"])


def tf_serving_rest_inputs(body: dict) -> tuple[str, list[bytes]]:
    """A stand-in for TF Serving's REST decoding (no TF Serving here): the row format of a
    one-input signature, each instance ``{"b64": ...}`` becoming one string of the batch."""
    return body.get("signature_name", SIGNATURE), [
        base64.b64decode(instance["b64"], validate=True) for instance in body["instances"]]


def kserve_png(folder) -> tuple[bytes, str]:
    """The one image of deploy/kserve/predict-bytes.json (bytes, as TF Serving decodes the
    request), and a file holding it."""
    signature, (data,) = tf_serving_rest_inputs(json.loads(KSERVE_REQUEST.read_text()))
    assert signature == BYTES_SIGNATURE
    path = os.path.join(folder, "request.png")
    with open(path, "wb") as handle:
        handle.write(data)
    return data, path


def test_the_kserve_request_decodes_and_classifies(signatures, images, tmp_path):
    from PIL import Image

    data, path = kserve_png(tmp_path)
    with Image.open(path) as picture:
        assert (picture.format, picture.mode, picture.size) == ("PNG", "L", (28, 28))
    answer = probs(signatures, BYTES_SIGNATURE, [data])  # resized to the model's 8x8
    assert answer.shape == (1, CLASSES) and abs(answer.sum() - 1) < 1e-5
    decoded = read_image(path, SHAPE)  # decoded and resized as tbpipe predict reads files
    assert answer.argmax() == probs(signatures, SIGNATURE, decoded[None]).argmax()
    pixels, _ = images
    ours = {"signature_name": BYTES_SIGNATURE,
            "instances": [{"b64": base64.b64encode(encode_png(p)).decode()} for p in pixels]}
    signature, data = tf_serving_rest_inputs(json.loads(json.dumps(ours)))
    np.testing.assert_array_equal(probs(signatures, signature, data).argmax(axis=1),
                                  probs(signatures, SIGNATURE, pixels).argmax(axis=1))


def test_the_kserve_request_is_a_7_to_a_model_of_builtin_digits(tmp_path):
    """A softmax regression fitted for seconds on builtin:digits, as preprocess reads them.

    Linear: its fit hardly depends on the seed or the float order (seeds 0 to 5 all give 7,
    at 0.45 to 0.65, the runner-up at most a third of it).
    """
    import keras
    import tensorflow as tf

    from tbpipe.components.common.serving import export_saved_model
    from tbpipe.components.preprocessing.clean import clean_chunk
    from tbpipe.components.preprocessing.readers import builtin_source

    source = builtin_source("builtin:digits", 5000)
    (chunk,) = source.chunks()
    pixels, labels, _ = clean_chunk(source.name, chunk, source.max_value, source.image_shape)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(source.image_shape), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss="sparse_categorical_crossentropy")
    model.fit(pixels.astype(np.float32) / 255.0, labels, epochs=40, batch_size=128, verbose=0)
    export_saved_model(model, str(tmp_path / "saved"), source.image_shape)
    signatures = tf.saved_model.load(str(tmp_path / "saved")).signatures
    data, path = kserve_png(tmp_path)
    by_bytes = probs(signatures, BYTES_SIGNATURE, [data])[0]
    by_pixels = probs(signatures, SIGNATURE, read_image(path, source.image_shape)[None])[0]
    assert by_bytes.argmax() == by_pixels.argmax() == 7, by_bytes
    assert np.sort(by_bytes)[-2] < by_bytes[7] / 2  # not a near tie
    np.testing.assert_allclose(by_bytes, by_pixels, atol=0.02)  # two decoders, one image


def test_the_warmup_file_holds_a_request_per_signature(best, signatures):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(saved_model_path(best), WARMUP_FILE)
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                for log in logs}
    assert sorted(requests) == sorted([SIGNATURE, BYTES_SIGNATURE]) and len(logs) == 2
    for name, request in requests.items():
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert signatures[name](**inputs)[OUTPUT_KEY].shape == (1, CLASSES)


@pytest.fixture(scope="module")
def test_data(tmp_path_factory):
    from tbpipe.components.common.dataset import DatasetWriter

    root = tmp_path_factory.mktemp("serving-check") / "test"
    images, labels = synthetic_images(32, SHAPE, CLASSES, 4)
    writer = DatasetWriter(str(root), SHAPE, CLASSES)
    writer.write(images, labels)
    writer.class_names = tuple(NAMES)  # the model's names: class names must match
    writer.close()
    return str(root)


def test_the_serving_check_is_recorded_and_predict_reads_the_production_folder(
        best, test_data, images, tmp_path, capsys):
    prod = tmp_path / "production"
    decision = promote_model(best, test_data, str(prod), "", str(tmp_path / "logs"),
                             str(tmp_path / "report.md"), PromoteConfig(run_label="e/r1"))
    assert decision.version == "v1"
    check = publish.read_record(str(prod))["current"]["serving_check"]
    assert check["passed"] and check["load_s"] > 0 and check["warmup_requests"] == 2
    assert set(check["max_diff"]) == {SIGNATURE, BYTES_SIGNATURE}
    assert max(check["max_diff"].values()) <= check["tolerance"] == 1e-4
    # tbpipe predict --model ./production: the version it serves, on a folder, as CSV
    pixels, _ = images
    folder = tmp_path / "images"
    folder.mkdir()
    for i, p in enumerate(pixels[:5]):
        (folder / f"img{i}.png").write_bytes(encode_png(p))
    from tbpipe.pipelines.cli.main import main

    capsys.readouterr()
    status = main(["predict", "--model", str(prod), "--output", "csv", "--top", "2",
                   str(folder)])
    out, err = capsys.readouterr()
    assert status == 0, err[-2000:]
    lines = out.splitlines()
    assert lines[0] == "path,class_1,probability_1,class_2,probability_2,error"
    import keras

    model = keras.saving.load_model(os.path.join(best, "model.keras"), compile=False)
    expected = model.predict(pixels[:5].astype(np.float32) / 255.0, verbose=0).argmax(axis=1)
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == [str(folder / f"img{i}.png") for i in range(5)]
    assert [r[1] for r in rows] == [NAMES[k] for k in expected]
    assert all(r[-1] == "" for r in rows)


def test_a_broken_saved_model_blocks_the_promotion_in_one_line(best, test_data, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(best, broken)
    variables = Path(saved_model_path(str(broken))) / "variables"
    (data,) = variables.glob("variables.data-*")
    data.write_bytes(bytes(reversed(data.read_bytes())))  # corrupted, the same size
    prod = tmp_path / "production"
    with pytest.raises(ServingCheckFailed) as caught:
        promote_model(str(broken), test_data, str(prod), "", str(tmp_path / "logs"),
                      str(tmp_path / "report.md"), PromoteConfig(run_label="e/r1"))
    line = str(caught.value)
    assert "\n" not in line and str(broken) in line and "not promoted" in line
    assert not (prod / publish.RECORD_FILE).exists()
    assert not [p for p in prod.glob("v*")] if prod.exists() else True


def test_a_saved_model_that_answers_unlike_its_keras_model_fails_the_check(best, tmp_path):
    from tbpipe.components.common.model_format import load_model_folder
    from tbpipe.components.common.serving import export_saved_model

    other = tmp_path / "other"
    shutil.copytree(best, other)
    shutil.rmtree(other / "saved_model")
    untrained, _ = load_model_folder(save_tiny_model(tmp_path / "untrained", epochs=0),
                                     compile=False)
    export_saved_model(untrained, saved_model_path(str(other)), SHAPE)  # another model's
    with pytest.raises(ServingCheckFailed, match=r"serving_default differs from the Keras "
                                                 r"model by up to .* > 0\.0001"):
        check_serving(str(other))
