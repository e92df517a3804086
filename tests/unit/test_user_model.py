"""``--model``: a user's model function, a .keras start model, and the one-line errors."""

import json
import textwrap

import numpy as np
import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.training.config import ModelSpec, TrainConfig
from tbpipe.components.training.core import train_model
from tbpipe.components.training.user_model import build_start_model
from tests.helpers import read_tags, write_dataset

pytestmark = pytest.mark.slow

USER_MODEL = textwrap.dedent('''
    import keras


    def tiny(input_shape, num_classes):
        return keras.Sequential([
            keras.Input(shape=input_shape),
            keras.layers.Flatten(name="flat_pixels"),
            keras.layers.Dense(12, activation="relu", name="hidden_user"),
            keras.layers.Dense(num_classes, activation="softmax", name="class_scores"),
        ], name="users_net")


    def broken(input_shape, num_classes):
        raise ValueError("no such layer size\\nsecond line")


    def not_a_model(input_shape, num_classes):
        return "a string"


    def wrong_classes(input_shape, num_classes):
        return tiny(input_shape, num_classes + 1)
''')


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(str(root / "train"), n=32, seed=0)
    write_dataset(str(root / "val"), n=16, seed=1)
    (root / "user_model.py").write_text(USER_MODEL)
    return root


def fit(data, tmp_path, spec, source="", **settings):
    config = TrainConfig(**{"epochs": 1, "batch_size": 16, "precision": "float32",
                            "model_spec": spec, "model_source": source, **settings})
    return train_model(str(data / "train"), str(data / "val"), str(tmp_path / "model"),
                       str(tmp_path / "logs"), config)


def test_a_user_function_is_compiled_trained_and_logged(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    spec = f"{data}/user_model.py:tiny"
    built = build_start_model(ModelSpec(spec), (8, 8, 1), 4, seed=1,
                              learning_rate=0.01, precision="float32")
    assert built.compiled and built.name == "users_net"  # uncompiled by the user, compiled here
    assert float(built.optimizer.learning_rate) == pytest.approx(0.01)

    result = fit(data, tmp_path, spec)
    assert set(result.metrics) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["model"] == spec and meta["source"] == "trained"
    tags = read_tags(str(tmp_path / "logs"))
    assert {"weights/hidden_user/kernel", "weights/class_scores/bias"} <= set(tags["histograms"])
    acc = EventAccumulator(str(tmp_path / "logs"), size_guidance={"tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors("model/summary/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    assert "users_net" in text and "hidden_user" in text and "class_scores" in text


def test_a_user_function_gets_the_precision_and_a_float32_softmax(data):
    built = build_start_model(ModelSpec(f"{data}/user_model.py:tiny"), (8, 8, 1), 4,
                              seed=1, learning_rate=0.01, precision="mixed_bfloat16")
    policies = [layer.dtype_policy.name for layer in built.layers]
    assert policies == ["mixed_bfloat16", "mixed_bfloat16", "float32"]
    assert [layer.name for layer in built.layers] == ["flat_pixels", "hidden_user",
                                                      "class_scores"]


def test_training_starts_from_a_keras_file(data, tmp_path):
    from tbpipe.components.training.model import build_cnn

    start = build_cnn((8, 8, 1), 4, seed=7)
    start.save(str(tmp_path / "prod.keras"))
    spec = str(tmp_path / "prod.keras")
    loaded = build_start_model(ModelSpec(spec), (8, 8, 1), 4, seed=1,
                               learning_rate=0.02, precision="float32")
    for want, got in zip(start.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(want, got)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.02)  # recompiled

    fit(data, tmp_path, spec, learning_rate=0.02)
    assert json.loads((tmp_path / "model" / "model.json").read_text())["model"] == spec


@pytest.mark.parametrize(("spec", "match"), [
    ("builtin:resnet", "the only built-in model is builtin:cnn"),
    ("model.h5", "not a model spec"),
    ("nets/model.py", "name the function too"),
    ("pkg.mod:1bad", "not a model spec"),
])
def test_a_spec_of_neither_form_is_refused_by_the_config(spec, match):
    with pytest.raises(InputError, match=match) as err:
        TrainConfig(model_spec=spec)
    assert len(str(err.value).splitlines()) == 1 and "--model" in str(err.value)


@pytest.mark.parametrize(("spec", "match"), [
    ("{data}/gone.py:tiny", "no such Python file"),
    ("{data}/gone.keras", "cannot load the Keras model"),
    ("{data}/user_model.py:missing", "has no function 'missing'"),
    ("{data}/user_model.py:broken", r"broken\(\(8, 8, 1\), 4\) raised ValueError: no such "
                                    r"layer size$"),
    ("{data}/user_model.py:not_a_model", "returned str, not a keras.Model"),
    ("{data}/user_model.py:wrong_classes", r"model takes \(8, 8, 1\) images with 5 classes, "
                                           r"the data has \(8, 8, 1\) with 4"),
    ("no_such_package_xyz.nets:tiny", "cannot import no_such_package_xyz.nets"),
])
def test_bad_models_fail_in_one_line_before_training(data, tmp_path, spec, match):
    with pytest.raises(InputError, match=match) as err:
        fit(data, tmp_path, spec.format(data=data))
    assert len(str(err.value).splitlines()) == 1
    assert not (tmp_path / "model").exists() and not (tmp_path / "logs").exists()


def test_a_start_model_for_other_data_is_refused(data, tmp_path):
    from tbpipe.components.training.model import build_cnn

    build_cnn((10, 10, 1), 4, seed=7).save(str(tmp_path / "other.keras"))
    with pytest.raises(InputError, match=r"other.keras: model takes \(10, 10, 1\) images"):
        fit(data, tmp_path, str(tmp_path / "other.keras"))
    assert not (tmp_path / "model").exists()


def test_the_source_travels_as_a_string_through_the_component(data, tmp_path):
    from kfp.dsl import Dataset, Metrics, Model

    from tbpipe.components import train

    source = ModelSpec(f"{data}/user_model.py:tiny").read_source()
    assert source == USER_MODEL
    model = Model(uri=str(tmp_path / "model"))
    # the pod has no such file: the text it was given is imported
    train.python_func(train_data=Dataset(uri=str(data / "train")),
                      val_data=Dataset(uri=str(data / "val")), model=model,
                      metrics=Metrics(uri=str(tmp_path / "m")), log_root=str(tmp_path / "logs"),
                      experiment="exp", run_name="", job_name="job-1", epochs=1, batch_size=16,
                      precision="float32", model_spec="/on/the/laptop/user_model.py:tiny",
                      model_source=source)
    assert model.metadata["epochs"] == 1
    tags = read_tags(str(tmp_path / "logs" / "exp" / "job-1" / "train"))
    assert "weights/hidden_user/kernel" in tags["histograms"]


def test_the_cli_reads_the_file_for_run_and_submit(data, tmp_path):
    from tbpipe.pipelines.runners.submit import run_arguments
    from tbpipe.pipelines.training import PipelineParams

    spec = f"{data}/user_model.py:tiny"
    params = PipelineParams(model=spec).validate().with_model_source()
    assert params.model_source == USER_MODEL
    assert PipelineParams(model="builtin:cnn").with_model_source().model_source == ""
    parameters = {"model": {"parameterType": "STRING"},
                  "model_source": {"parameterType": "STRING"},
                  "log_root": {"parameterType": "STRING"}}
    arguments = run_arguments(parameters, {"model": spec, "log_root": "gs://b/logs"})
    assert arguments["model_source"] == USER_MODEL
    with pytest.raises(InputError, match="cannot read .*gone.py"):
        PipelineParams(model=f"{data}/gone.py:tiny").with_model_source()
