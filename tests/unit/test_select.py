import json

import pytest

from tbpipe.components import decide_finetune, select_model
from tbpipe.components.common.errors import InputError
from tbpipe.components.selection.core import choose_model, finetune_plan


@pytest.mark.parametrize("mode, meets, data, plan", [
    ("auto", True, "", "skip"),
    ("auto", False, "", "same-data"),
    ("auto", False, "gs://b/other.csv", "other-data"),
    ("always", True, "", "same-data"),
    ("never", False, "x.csv", "skip"),
])
def test_finetune_plan(mode, meets, data, plan):
    assert finetune_plan(mode, meets, data) == plan
    assert decide_finetune.python_func(mode=mode, meets_target=meets, finetune_data=data) == plan


def test_unknown_mode():
    with pytest.raises(InputError):
        finetune_plan("sometimes", True, "")


def make_model(path, content):
    path.mkdir()
    (path / "model.keras").write_text(content)
    return str(path)


def test_best_model_is_copied_and_named(tmp_path):
    trained = make_model(tmp_path / "t", "trained")
    tuned = make_model(tmp_path / "f", "tuned")
    summary = choose_model(trained, 0.90, str(tmp_path / "best"), tuned, 0.95)
    assert summary["final_model"] == "finetuned"
    assert (tmp_path / "best" / "model.keras").read_text() == "tuned"
    assert summary["accuracy"] == {"trained": 0.90, "finetuned": 0.95}


def test_tie_keeps_trained_model(tmp_path):
    from kfp.dsl import Model

    trained, tuned = Model(uri=make_model(tmp_path / "t", "trained")), Model(
        uri=make_model(tmp_path / "f", "tuned"))
    best = Model(uri=str(tmp_path / "best"))
    out = json.loads(select_model.python_func(trained_model=trained, trained_accuracy=0.9,
                                              best_model=best, finetuned_model=tuned,
                                              finetuned_accuracy=0.9))
    assert out["final_model"] == "trained" and best.metadata["source"] == "trained"
    assert (tmp_path / "best" / "model.keras").read_text() == "trained"


def test_without_finetuning(tmp_path):
    summary = choose_model(make_model(tmp_path / "t", "m"), 0.5, str(tmp_path / "best"))
    assert summary["final_model"] == "trained" and summary["accuracy"] == {"trained": 0.5}
