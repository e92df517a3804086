"""Champion and challenger: the rule, real models scored on real data, the atomic swap."""

import hashlib
import json
import os

import numpy as np
import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.promotion import publish
from tbpipe.components.promotion.config import PromoteConfig
from tbpipe.components.promotion.core import decide, promote_model
from tests.helpers import read_scalars, write_dataset

SHAPE, CLASSES = (8, 8, 1), 4


def row_model(shape=SHAPE, classes=CLASSES, skill=1.0):
    """A Dense model for the synthetic data (class k lights row k).

    ``skill`` 1 is perfect; 0 ties every class, so it always predicts class 0.
    """
    from tbpipe.components.common.keras_import import import_keras

    keras = import_keras()
    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                              keras.layers.Dense(classes, activation="softmax")])
    weights = np.zeros((int(np.prod(shape)), classes), dtype=np.float32)
    for k in range(classes):
        rows = np.zeros(shape, dtype=np.float32)
        rows[k % shape[0]] = skill
        weights[:, k] = rows.reshape(-1)
    model.layers[-1].set_weights([weights, np.zeros(classes, dtype=np.float32)])
    return model


def save(model, uri, shape=SHAPE, classes=CLASSES):
    from tbpipe.components.common.model_format import save_model_folder

    save_model_folder(model, str(uri), {"image_shape": list(shape), "num_classes": classes,
                                        "epochs": 1})
    return str(uri)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A test Dataset, a perfect model and a model no better than chance."""
    root = tmp_path_factory.mktemp("promote")
    write_dataset(str(root / "test"), n=64, shape=SHAPE, classes=CLASSES, seed=3)
    good = save(row_model(skill=1.0), root / "good")
    bad = save(row_model(skill=0.0), root / "bad")
    return str(root / "test"), good, bad


def read_text(log_dir, tag):
    """The text entry ``tag`` logged in ``log_dir``'s event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    (event,) = acc.Tensors(f"{tag}/text_summary")
    return event.tensor_proto.string_val[0].decode()


def snapshot(folder):
    """Every file under ``folder`` (local or gs://) -> its sha256."""
    return {rel: hashlib.sha256(storage.read_bytes(storage.join(folder, rel))).hexdigest()
            for rel in storage.list_files(folder)}


def run_promote(world, tmp_path, model, prod, name, **settings):
    test, _, _ = world
    config = PromoteConfig(run_label=f"exp/{name}", **settings)
    return promote_model(model, test, str(prod), "", str(tmp_path / name / "promote"),
                         str(tmp_path / f"{name}.md"), config)


@pytest.mark.parametrize("new, base, settings, promoted, words", [
    ({"accuracy": 0.9, "macro_f1": 0.9}, None, {}, True, "no baseline"),
    ({"accuracy": 0.9, "macro_f1": 0.9}, {"accuracy": 0.8, "macro_f1": 0.8}, {}, True,
     "beats the baseline by +0.1000"),
    ({"accuracy": 0.8, "macro_f1": 0.9}, {"accuracy": 0.8, "macro_f1": 0.8}, {}, False,
     "not above 0"),
    ({"accuracy": 0.85, "macro_f1": 0.9}, {"accuracy": 0.8, "macro_f1": 0.8},
     {"min_improvement": 0.1}, False, "below the required 0.1"),
    ({"accuracy": 0.7, "macro_f1": 0.7}, {"accuracy": 0.8, "macro_f1": 0.8},
     {"force_promote": True}, True, "forced by --force-promote"),
    ({"accuracy": 0.7, "macro_f1": 0.9}, {"accuracy": 0.8, "macro_f1": 0.8},
     {"promotion_metric": "macro_f1"}, True, "beats the baseline by +0.1000"),
])
def test_the_rule(new, base, settings, promoted, words):
    decision = decide(new, base, "b" if base else "", PromoteConfig(**settings))
    assert decision.promoted is promoted and words in decision.reason
    assert decision.line().startswith("promoted" if promoted else "kept baseline")


def test_unknown_metric_and_bad_improvement_are_one_line():
    with pytest.raises(SettingError, match="promotion_metric='auc': must be one of accuracy, "
                                           "macro_f1"):
        PromoteConfig(promotion_metric="auc")
    with pytest.raises(SettingError, match="min_improvement"):
        PromoteConfig(min_improvement=1.5)


@pytest.mark.parametrize("argv, line", [
    (["--promotion-metric", "auc", "--promote-to", "p"],
     "--promotion-metric='auc': must be one of accuracy, macro_f1"),
    (["--baseline-model", "b"], "--baseline-model='b': needs --promote-to"),
    (["--force-promote"], "--force-promote=True: needs --promote-to"),
    (["--promote-to", "p", "--baseline-model", "nope"], "--baseline-model nope: no such file"),
    (["--promote-to", "p.keras"], "p.keras: promote to a folder"),
])
def test_run_refuses_bad_promotion_flags_before_it_starts(argv, line, tmp_path, monkeypatch,
                                                           capsys):
    from tbpipe.pipelines.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["run", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tbpipe: error: {line}") and err.count("\n") == 1, err
    assert os.listdir(tmp_path) == []  # nothing started


def test_first_promotes_then_a_worse_model_keeps_the_baseline(world, tmp_path):
    test, good, bad = world
    prod = tmp_path / "prod"
    first = run_promote(world, tmp_path, good, prod, "r1")
    assert first.promoted and first.baseline_scores is None and "no baseline" in first.reason
    assert first.line().endswith("(no baseline: the first model is promoted; production is v1)")
    assert first.version == "v1" and publish.current_model(str(prod)) == str(prod / "v1")
    assert snapshot(str(prod / "v1")) == snapshot(good)  # the model and its SavedModel
    record = json.loads((prod / "promotion.json").read_text())
    assert record["current"]["run"] == "exp/r1" and len(record["history"]) == 1
    assert record["current"]["version"] == "v1"
    assert record["current"]["files"] == storage.list_files(good)
    assert record["current"]["new"]["accuracy"] == 1.0 and record["current"]["baseline"] is None
    before = snapshot(str(prod))

    second = run_promote(world, tmp_path, bad, prod, "r2")  # baseline: what prod serves
    assert not second.promoted and second.baseline_uri == str(prod / "v1")
    assert second.version == ""
    assert second.new_scores["accuracy"] < 0.5 and second.baseline_scores["accuracy"] == 1.0
    assert snapshot(str(prod)) == before
    before_v1 = snapshot(str(prod / "v1"))
    assert sorted(os.listdir(tmp_path)) == sorted(["prod", ".prod.lock", "r1", "r2", "r1.md",
                                                   "r2.md"])

    scalars = read_scalars(str(tmp_path / "r2" / "promote"))
    assert scalars["promote/accuracy/baseline"] == [(0, 1.0)]
    assert scalars["promote/accuracy/new"][0][1] < 0.5 and scalars["promote/promoted"] == [
        (0, 0.0)]
    assert read_text(str(tmp_path / "r2" / "promote"), "promote/decision").startswith(
        "kept baseline: new accuracy 0.2500 vs baseline 1.0000")
    report = (tmp_path / "r2.md").read_text()
    assert "**kept baseline: new accuracy" in report and "vs baseline 1.0000" in report

    forced = run_promote(world, tmp_path, bad, prod, "r3", force_promote=True)
    assert forced.promoted and "forced" in forced.reason
    history = json.loads((prod / "promotion.json").read_text())["history"]
    assert [h["run"] for h in history] == ["exp/r1", "exp/r3"] and history[1]["forced"]
    assert [h["version"] for h in history] == ["v1", "v2"] and forced.version == "v2"
    assert snapshot(str(prod / "v1")) == before_v1  # a version is never changed


def test_a_baseline_with_other_classes_or_shape_is_one_line(world, tmp_path):
    test, good, _ = world
    three = save(row_model(classes=3), tmp_path / "three", classes=3)
    wide = tmp_path / "wide.keras"
    row_model(shape=(8, 6, 1)).save(str(wide))
    for baseline in (three, str(wide)):
        with pytest.raises(InputError) as err:
            promote_model(good, test, str(tmp_path / "prod"), baseline, str(tmp_path / "l"),
                          str(tmp_path / "r.md"), PromoteConfig())
        line = str(err.value)
        assert line.startswith(baseline) and "\n" not in line and "--baseline-model" in line
    assert not (tmp_path / "prod").exists()


def test_files_a_user_keeps_in_the_target_survive_and_a_foreign_record_is_refused(world,
                                                                                   tmp_path):
    _, good, _ = world
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert run_promote(world, tmp_path, good, tmp_path / "mine", "r1").promoted
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "promotion.json").write_text('{"owner": "someone else"}')
    with pytest.raises(InputError, match="not a tbpipe promotion record"):
        run_promote(world, tmp_path, good, tmp_path / "theirs", "r2")
    assert os.listdir(tmp_path / "theirs") == ["promotion.json"]


def test_a_broken_candidate_is_never_promoted_and_a_broken_baseline_never_compared(
        world, tmp_path):
    """Weights set to NaN: the candidate is refused; as the baseline it needs --force-promote."""
    from tbpipe.components.promotion.core import BrokenModel

    _, good, _ = world
    model = row_model()
    weights = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.full_like(weights[0], np.nan), weights[1]])
    broken = save(model, tmp_path / "broken")
    prod = tmp_path / "prod"
    with pytest.raises(BrokenModel, match="NaN or infinite.*not promoted") as err:
        run_promote(world, tmp_path, broken, prod, "r1")
    assert str(err.value).startswith(broken) and "\n" not in str(err.value)
    assert publish.current_model(str(prod)) == ""  # nothing was promoted

    test, _, _ = world
    with pytest.raises(BrokenModel, match="it is the baseline: pass --force-promote"):
        promote_model(good, test, str(prod), broken, str(tmp_path / "l"),
                      str(tmp_path / "r.md"), PromoteConfig())
    assert publish.current_model(str(prod)) == ""
    forced = promote_model(good, test, str(prod), broken, str(tmp_path / "l2"),
                           str(tmp_path / "r2.md"), PromoteConfig(force_promote=True))
    assert forced.promoted and "the baseline is broken" in forced.reason
    assert forced.baseline_scores is None and forced.version == "v1"


@pytest.mark.parametrize("new, base", [
    ({"accuracy": float("nan"), "macro_f1": 0.5}, {"accuracy": 0.8, "macro_f1": 0.8}),
    ({"accuracy": 0.9, "macro_f1": 0.9}, {"accuracy": float("nan"), "macro_f1": 0.8}),
    ({"accuracy": float("inf"), "macro_f1": 0.9}, None),
])
def test_the_rule_refuses_non_finite_scores(new, base):
    with pytest.raises(InputError, match="not finite"):
        decide(new, base, "b" if base else "", PromoteConfig(force_promote=True))


def test_a_promotion_into_the_log_root_is_refused(world, tmp_path):
    _, good, _ = world
    test, _, _ = world
    with pytest.raises(InputError, match="is the log root"):
        promote_model(good, test, str(tmp_path / "logs" / "prod"), "",
                      str(tmp_path / "logs" / "e" / "r" / "promote"), str(tmp_path / "r.md"),
                      PromoteConfig(), log_root=str(tmp_path / "logs"))
    assert not (tmp_path / "logs").exists()
