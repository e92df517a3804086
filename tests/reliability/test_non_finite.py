"""Never succeed with a broken model: NaN losses, weights and outputs end in one line.

A model made to diverge (learning rate 1e30) or whose weights are set to NaN is never saved,
evaluated as a success, selected, promoted (``tests/unit/test_promote.py``) or answered with
by ``predict``; no NaN reaches kfp's metadata (its serialization crashed on one).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from tbpipe.components.common.errors import InputError
from tests.helpers import write_dataset
from tests.unit.test_promote import row_model, save


def nan_model(folder) -> str:
    """A tbpipe Model folder whose last layer's kernel is NaN (8x8x1 images, 4 classes)."""
    model = row_model()
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.full_like(kernel, np.nan), bias])
    return save(model, folder)


def one_error_line(capsys, step: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tbpipe")]
    assert len(err) == 1 and err[0].startswith(f"tbpipe: {step}: error: "), err
    return err[0]


@pytest.mark.slow
def test_a_diverging_training_ends_with_one_line_and_saves_nothing(tmp_path, capsys):
    from tbpipe.components import train

    write_dataset(str(tmp_path / "train"), n=32, seed=0)
    write_dataset(str(tmp_path / "val"), n=16, seed=1)
    model, metrics = Model(uri=str(tmp_path / "model")), Metrics(uri=str(tmp_path / "m"))
    with pytest.raises(SystemExit) as code:
        train.python_func(train_data=Dataset(uri=str(tmp_path / "train")),
                          val_data=Dataset(uri=str(tmp_path / "val")), model=model,
                          metrics=metrics, log_root=str(tmp_path / "logs"), epochs=2,
                          batch_size=16, learning_rate=1e30, experiment="exp",
                          run_name="diverge", job_name="job-1",
                          checkpoint_root=str(tmp_path / "ckpt"))
    assert code.value.code == 1
    line = one_error_line(capsys, "train")
    # the batch loss turns NaN first, or (when the last batch's loss was still finite) the
    # weights its update left: both guards end the step in epoch 1, which one is numerics
    assert re.search(r"training diverged: the loss became nan in epoch 1|after epoch 1: the "
                     r"weights hold NaN or infinite values", line), line
    assert "lower the learning rate" in line
    assert not os.path.exists(tmp_path / "model")  # nothing a later step takes as good
    assert metrics.metadata == {}
    ckpt = tmp_path / "ckpt" / "exp" / "diverge" / "checkpoints" / "train"
    assert not (ckpt / "state.json").exists()  # the diverged epoch was never checkpointed


def test_the_guard_checks_an_epochs_metrics_and_weights_before_a_checkpoint(tmp_path):
    from tbpipe.components.training.divergence import Diverged, StopOnNonFinite

    guard = StopOnNonFinite()
    guard.set_model(row_model())
    guard.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.7})  # finite: nothing happens
    guard.on_train_batch_end(3, {"loss": 0.5})
    with pytest.raises(Diverged, match=r"val_loss=inf after epoch 2"):
        guard.on_epoch_end(1, {"loss": 0.5, "val_loss": float("inf")})
    with pytest.raises(Diverged, match="the loss became nan in epoch 1, batch 4"):
        guard.on_train_batch_end(3, {"loss": float("nan")})
    model = row_model()
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel, np.full_like(bias, np.inf)])
    guard.set_model(model)
    with pytest.raises(Diverged, match=r"after epoch 1: the weights hold NaN or infinite "
                                       r"values \(.*bias\)"):
        guard.on_epoch_end(0, {"loss": 0.5})


def test_evaluate_refuses_a_model_with_nan_outputs_before_kfps_metadata(tmp_path, capsys):
    from tbpipe.components import evaluate

    write_dataset(str(tmp_path / "test"), n=20, seed=2)
    broken = nan_model(tmp_path / "broken")
    metrics = Metrics(uri=str(tmp_path / "metrics"))
    with pytest.raises(SystemExit) as code:
        evaluate.python_func(model=Model(uri=broken), test_data=Dataset(
            uri=str(tmp_path / "test")), metrics=metrics,
            classification_metrics=ClassificationMetrics(uri=str(tmp_path / "cm")),
            report=Markdown(uri=str(tmp_path / "report.md")),
            html_report=HTML(uri=str(tmp_path / "report.html")), log_root=str(tmp_path / "logs"),
            experiment="exp", run_name="r", job_name="job-2")
    assert code.value.code == 1
    line = one_error_line(capsys, "evaluate")
    assert f"{broken}: the model's outputs are NaN or infinite for 20 of 20" in line
    assert metrics.metadata == {} and not (tmp_path / "report.md").exists()
    assert not (tmp_path / "report.html").exists()


def test_selection_refuses_a_non_finite_accuracy(tmp_path):
    from tbpipe.components.selection.core import choose_model, select_best

    good = save(row_model(), tmp_path / "good")
    with pytest.raises(InputError, match="finetuned model's accuracy is nan"):
        select_best([("trained", good, 0.5), ("finetuned", "f", float("nan"))])
    with pytest.raises(InputError, match="trained model's accuracy is nan"):
        # NaN compares false: before, the NaN model was kept as the best
        choose_model(good, float("nan"), str(tmp_path / "best"), good, 0.9)
    assert not (tmp_path / "best").exists()


def test_predict_answers_a_nan_model_with_an_error_line_per_file(tmp_path):
    from PIL import Image

    from tbpipe.components.common.serving import predict_files

    broken = nan_model(tmp_path / "broken")
    files = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(path)
        files.append(str(path))
    out, err = [], []
    assert predict_files(broken, files, emit=out.append, emit_error=err.append) == 2
    assert out == []
    assert [line.split(": ", 2)[1] for line in err] == files
    assert all("the model's output is NaN or infinite" in line for line in err)
    assert json.loads((tmp_path / "broken" / "model.json").read_text())["num_classes"] == 4
