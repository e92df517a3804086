"""A model artifact that is not a model, or whose input shape does not fit the data.

Evaluate and finetune, at the component level (no CLI input takes a model artifact: the
pipeline passes its own). Each fails with SystemExit(1) and one line naming the model or the
data and what to do, before any report, model folder, log or checkpoint is written; a
previous output at the same place stays as it was.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from tbpipe.components import evaluate, finetune
from tests.helpers import write_dataset
from tests.reliability.support import logged_files, one_error_line, tree_digest, whole_outputs

WHERE = dict(experiment="exp", run_name="r1", job_name="job")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Data sets 8x8 and 10x10 (4 classes) and 8x8 (3 classes), and an 8x8/4-class model."""
    from tbpipe.components.common.model_format import save_model_folder
    from tbpipe.components.training.model import build_cnn

    root = tmp_path_factory.mktemp("models")
    write_dataset(str(root / "data8"), n=16, shape=(8, 8, 1), classes=4)
    write_dataset(str(root / "data10"), n=16, shape=(10, 10, 1), classes=4)
    write_dataset(str(root / "data8-3"), n=15, shape=(8, 8, 1), classes=3)
    save_model_folder(build_cnn((8, 8, 1), 4, seed=0), str(root / "model8"),
                      {"image_shape": [8, 8, 1], "num_classes": 4, "epochs": 1})
    return root


def bad_model(root: Path, tmp_path: Path, kind: str) -> Path:
    """A model folder that is not a usable model, of one ``kind``."""
    path = tmp_path / kind
    if kind == "a-dataset":  # a Dataset folder passed where a Model goes
        shutil.copytree(root / "data8", path)
        return path
    shutil.copytree(root / "model8", path)
    meta = json.loads((path / "model.json").read_text())
    if kind == "garbage-model-file":
        (path / "model.keras").write_bytes(b"definitely not a keras archive")
    elif kind == "no-model-file":
        (path / "model.keras").unlink()
    elif kind == "no-model-json":
        (path / "model.json").unlink()
    elif kind == "model-json-not-an-object":
        (path / "model.json").write_text("[8, 8, 1]")
    elif kind == "model-json-lies":  # says 10x10, holds the 8x8 network
        (path / "model.json").write_text(json.dumps({**meta, "image_shape": [10, 10, 1]}))
    return path


def fails(capsys, step: str, call) -> str:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return one_error_line(captured.err, rf"^tbpipe: {step}: error: ")


def run_evaluate(model: Path, data: Path, out: Path) -> None:
    evaluate.python_func(model=Model(uri=str(model)), test_data=Dataset(uri=str(data)),
                         metrics=Metrics(uri=str(out / "metrics")),
                         classification_metrics=ClassificationMetrics(uri=str(out / "cm")),
                         report=Markdown(uri=str(out / "report")),
                         html_report=HTML(uri=str(out / "report.html")),
                         log_root=str(out / "logs"), **WHERE)


EVALUATE_CASES = {
    # the same lines as finetune's: one Model format, one loader (common/model_format.py)
    "garbage-model-file": ("data8", r"{model}/model\.keras: cannot load the Keras model "
                           r"\(.*\); rerun the step that wrote it"),
    "no-model-file": ("data8", r"{model}/model\.keras: cannot load the Keras model"),
    "no-model-json": ("data8", r"{model}: not a tbpipe Model \(no readable model\.json\); "
                      r"pass the model output of the train step"),
    "a-dataset": ("data8", r"{model}: not a tbpipe Model"),
    "model-json-not-an-object": ("data8", r"{model}: not a tbpipe Model \(model\.json lacks "
                                 r"image_shape/num_classes\)"),
    "wrong-image-shape": ("data10", r"{data}: images are \[10, 10, 1\] but the model takes "
                          r"\[8, 8, 1\]; evaluate with the dataset the model was trained for"),
    "wrong-class-count": ("data8-3", r"{data}: 3 classes but the model predicts 4; evaluate "
                          r"with the matching dataset"),
}


@pytest.mark.parametrize("name", sorted(EVALUATE_CASES))
def test_evaluate_refuses_a_model_that_does_not_fit(name, root, tmp_path, capsys):
    data_name, needle = EVALUATE_CASES[name]
    model = root / "model8" if name.startswith("wrong-") else bad_model(root, tmp_path, name)
    data = root / data_name
    out = tmp_path / "out"
    line = fails(capsys, "evaluate", lambda: run_evaluate(model, data, out))
    assert re.search(needle.format(model=re.escape(str(model)), data=re.escape(str(data))),
                     line), line
    assert whole_outputs(out) == [] and logged_files(out / "logs") == []


FINETUNE_CASES = {
    "garbage-model-file": ("data8", 0, r"{model}/model\.keras: cannot load the Keras model "
                           r"\(.*\); rerun the step that wrote it"),
    "no-model-file": ("data8", 0, r"{model}/model\.keras: cannot load the Keras model"),
    "no-model-json": ("data8", 0, r"{model}: not a tbpipe Model \(no readable model\.json\); "
                      r"pass the model output of the train step"),
    "a-dataset": ("data8", 0, r"{model}: not a tbpipe Model"),
    "model-json-not-an-object": ("data8", 0, r"{model}: not a tbpipe Model \(model\.json "
                                 r"lacks image_shape/num_classes\)"),
    "model-json-lies": ("data10", 0, r"{model}: model\.keras takes \(8, 8, 1\) -> 4 classes, "
                        r"model\.json says \(10, 10, 1\) -> 4; rerun the train step"),
    "wrong-image-shape": ("data10", 0, r"{model}: model takes \(8, 8, 1\) images with 4 "
                          r"classes, the data has \(10, 10, 1\) with 4; fine-tune on data "
                          r"shaped like the base model's"),
    "wrong-class-count": ("data8-3", 0, r"{model}: model takes .* 4 classes, the data has .* "
                          r"with 3"),
    "freeze-every-layer": ("data8", 99, r"freeze_layers=99: the model has 7 layers; freeze "
                           r"fewer"),
}


@pytest.mark.parametrize("name", sorted(FINETUNE_CASES))
def test_finetune_refuses_a_model_that_does_not_fit(name, root, tmp_path, capsys):
    data_name, freeze, needle = FINETUNE_CASES[name]
    model = (root / "model8" if name.startswith(("wrong-", "freeze-"))
             else bad_model(root, tmp_path, name))
    data = Dataset(uri=str(root / data_name))
    shutil.copytree(root / "model8", tmp_path / "tuned")  # a previous attempt's whole output
    before = tree_digest(tmp_path / "tuned")
    line = fails(capsys, "finetune", lambda: finetune.python_func(
        model=Model(uri=str(model)), train_data=data, val_data=data,
        finetuned_model=Model(uri=str(tmp_path / "tuned")),
        metrics=Metrics(uri=str(tmp_path / "metrics")), log_root=str(tmp_path / "logs"),
        freeze_layers=freeze, epochs=1, **WHERE))
    assert re.search(needle.format(model=re.escape(str(model))), line), line
    assert tree_digest(tmp_path / "tuned") == before
    assert logged_files(tmp_path / "logs") == []
