"""The precision setting: build, save, load and predict on CPU in each; train/finetune/pipeline."""

import json

import numpy as np
import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.training.config import PRECISIONS, TrainConfig
from tbpipe.components.training.core import train_model
from tests.helpers import write_train_val

COMPUTE = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_val(tmp_path_factory.mktemp("data"), 48, 16)


@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_each_precision_trains_saves_loads_and_predicts_on_cpu(tmp_path, precision):
    import keras

    from tbpipe.components.training.model import build_cnn, is_mixed_precision, model_precision

    model = build_cnn((8, 8, 1), 4, seed=1, precision=precision, jit_compile=False)
    assert model_precision(model) == precision
    assert {layer.compute_dtype for layer in model.layers[:-1]} == {COMPUTE[precision]}
    assert model.layers[-1].compute_dtype == "float32"  # the softmax stays float32
    assert {w.dtype for w in model.weights} == {"float32"}  # so do the weights
    scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == is_mixed_precision(model) == (precision == "mixed_float16")
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    model.fit(x, np.arange(32) % 4, batch_size=16, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert model_precision(loaded) == precision
    probs = loaded.predict(x[:4], verbose=0)
    assert probs.dtype == np.float32 and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(probs, model.predict(x[:4], verbose=0), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(("gpus", "amx", "expected"), [
    (["/physical_device:GPU:0"], True, "mixed_float16"),
    (["/physical_device:GPU:0"], False, "mixed_float16"),
    ([], True, "mixed_bfloat16"),
    ([], False, "float32"),
])
def test_auto_precision_follows_the_hardware(monkeypatch, gpus, amx, expected):
    from tbpipe.components.training import model

    monkeypatch.setattr(model, "visible_gpus", lambda: gpus)
    monkeypatch.setattr(model, "cpu_has_amx_bf16", lambda: amx)
    assert model.resolve_precision("auto") == expected
    for precision in PRECISIONS[1:]:
        assert model.resolve_precision(precision) == precision


def test_amx_is_read_from_the_cpu_flags(monkeypatch, tmp_path):
    from tbpipe.components.training.model import cpu_has_amx_bf16

    amx, older = tmp_path / "amx", tmp_path / "older"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    older.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_has_amx_bf16(str(amx)) and not cpu_has_amx_bf16(str(older))
    assert not cpu_has_amx_bf16(str(tmp_path / "missing"))
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # no oneDNN kernels: bfloat16 is slow
    assert not cpu_has_amx_bf16(str(amx))


@pytest.mark.parametrize("bad", ["fp8", "bfloat16", "", None, "Float32"])
def test_bad_precision_is_one_line_naming_the_value_and_choices(data, tmp_path, bad):
    with pytest.raises(InputError) as err:
        train_model(*data, str(tmp_path / "m"), str(tmp_path / "l"),
                    TrainConfig(epochs=1, precision=bad))
    message = str(err.value)
    assert "\n" not in message and f"precision={bad!r}" in message
    assert all(choice in message for choice in PRECISIONS)
    assert not (tmp_path / "m").exists() and not (tmp_path / "l").exists()


def test_with_precision_keeps_weights_names_and_frozen_layers():
    from tbpipe.components.training.model import build_cnn, model_precision, with_precision

    model = build_cnn((8, 8, 1), 4, seed=2, jit_compile=False)
    model.layers[0].trainable = False
    assert with_precision(model, "float32") is model  # nothing to change
    bf16 = with_precision(model, "mixed_bfloat16")
    assert model_precision(bf16) == "mixed_bfloat16" and model_precision(model) == "float32"
    assert bf16.layers[-1].compute_dtype == "float32"
    assert [layer.name for layer in bf16.layers] == [layer.name for layer in model.layers]
    assert [layer.trainable for layer in bf16.layers] == [False] + [True] * 6
    for ours, theirs in zip(bf16.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    x = np.random.default_rng(1).random((4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_allclose(bf16.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=0.02)  # bfloat16 keeps ~3 significant digits
    back = with_precision(bf16, "float32")
    assert model_precision(back) == "float32"
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_train_and_finetune_record_the_precision(data, tmp_path):
    from tbpipe.components.common.model_format import load_model_folder
    from tbpipe.components.finetuning.config import FinetuneConfig
    from tbpipe.components.finetuning.core import finetune_model
    from tbpipe.components.training.model import model_precision, resolve_precision
    from tests.unit.test_train import read_hparams

    train_model(*data, str(tmp_path / "m"), str(tmp_path / "logs"),
                TrainConfig(epochs=1, batch_size=16, precision="mixed_bfloat16"))
    model, meta = load_model_folder(str(tmp_path / "m"))
    assert model_precision(model) == meta["precision"] == "mixed_bfloat16"
    assert read_hparams(str(tmp_path / "logs"))["precision"] == "mixed_bfloat16"

    finetune_model(str(tmp_path / "m"), *data, str(tmp_path / "f"), str(tmp_path / "flogs"),
                   FinetuneConfig(epochs=1, batch_size=16, freeze_layers=2, precision="auto"))
    tuned, tuned_meta = load_model_folder(str(tmp_path / "f"))
    auto = resolve_precision("auto")  # what auto means on this machine (tested above)
    assert model_precision(tuned) == tuned_meta["precision"] == auto
    assert read_hparams(str(tmp_path / "flogs"))["precision"] == auto
    assert [layer.trainable for layer in tuned.layers[:3]] == [False, False, True]


def test_a_checkpoint_resumes_only_in_its_own_precision(data, tmp_path):
    def run(precision, epochs):
        config = TrainConfig(epochs=epochs, batch_size=16, precision=precision,
                             checkpoint_dir=str(tmp_path / "ckpt"))
        return train_model(*data, str(tmp_path / "m"), str(tmp_path / "logs"), config)

    run("mixed_bfloat16", 1)
    state = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert state["fingerprint"]["precision"] == "mixed_bfloat16"
    with pytest.raises(InputError, match="precision='mixed_bfloat16', now 'float32'"):
        run("float32", 2)
    assert run("mixed_bfloat16", 2).resumed_from_epoch == 1


def test_precision_flag_and_pipeline_parameter():
    from tbpipe.pipelines.cli.flags import params_from_args
    from tbpipe.pipelines.cli.main import build_parser
    from tbpipe.pipelines.training import PipelineParams

    def parse(*argv):
        return params_from_args(build_parser().parse_args(["run", *argv]))

    assert PipelineParams().precision == "auto" == parse().precision
    assert parse("--precision", "mixed_bfloat16").precision == "mixed_bfloat16"
    with pytest.raises(InputError, match="--precision='fp8': must be one of auto, float32, "
                                         "mixed_float16, mixed_bfloat16"):
        parse("--precision", "fp8")


def test_submit_checks_the_precision_parameter():
    from tbpipe.pipelines.runners.submit import run_arguments

    spec = {"precision": {"parameterType": "STRING", "defaultValue": "auto"},
            "epochs": {"parameterType": "NUMBER_INTEGER", "defaultValue": 10}}
    assert run_arguments(spec, {"precision": "mixed_bfloat16"}) == {"precision": "mixed_bfloat16"}
    with pytest.raises(InputError, match="--precision='half': must be one of"):
        run_arguments(spec, {"precision": "half"})
