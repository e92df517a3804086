"""Champion and challenger: the rule, real models scored on real data, the atomic swap."""

import hashlib
import json
import os

import numpy as np
import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, SettingError, StorageError
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
    assert (prod / "model.keras").read_bytes() == open(os.path.join(good, "model.keras"),
                                                       "rb").read()
    record = json.loads((prod / "promotion.json").read_text())
    assert record["current"]["run"] == "exp/r1" and len(record["history"]) == 1
    assert record["current"]["new"]["accuracy"] == 1.0 and record["current"]["baseline"] is None
    before = snapshot(str(prod))

    second = run_promote(world, tmp_path, bad, prod, "r2")  # baseline: what prod holds
    assert not second.promoted and second.baseline_uri == str(prod)
    assert second.new_scores["accuracy"] < 0.5 and second.baseline_scores["accuracy"] == 1.0
    assert snapshot(str(prod)) == before
    assert sorted(os.listdir(tmp_path)) == sorted(["prod", "r1", "r2", "r1.md", "r2.md"])

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


def test_promote_to_a_folder_of_other_files_is_refused(world, tmp_path):
    _, good, _ = world
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="holds files but no tbpipe Model"):
        run_promote(world, tmp_path, good, tmp_path / "mine", "r1")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_crash_mid_copy_leaves_production_whole(world, tmp_path):
    import shutil

    _, good, bad = world
    prod = str(tmp_path / "prod")
    publish.publish(good, prod, {"run": "exp/r1"})
    before = snapshot(prod)
    vanishing = tmp_path / "src" / "bad"
    shutil.copytree(bad, vanishing)
    os.symlink(tmp_path / "gone", vanishing / "weights.h5")  # a file that vanished mid-copy
    with pytest.raises(StorageError, match="cannot copy the new model.*unchanged"):
        publish.publish(str(vanishing), prod, {"run": "exp/r2"})
    assert snapshot(prod) == before
    assert sorted(os.listdir(tmp_path)) == ["prod", "src"]  # no staging left behind


def test_a_crash_between_the_renames_is_put_back(world, tmp_path):
    _, good, _ = world
    prod = str(tmp_path / "prod")
    publish.publish(good, prod, {"run": "exp/r1"})
    before = snapshot(prod)
    os.replace(prod, str(tmp_path / ".prod.previous"))  # the swap's first rename, then a crash
    assert "put back" in publish.recover(prod)
    assert snapshot(prod) == before and sorted(os.listdir(tmp_path)) == ["prod"]


@pytest.mark.gcs
def test_gcs_swap_keeps_the_previous_version_until_the_new_one_is_whole(world, gcs_root,
                                                                      monkeypatch):
    _, good, bad = world
    prod = storage.join(gcs_root, "models", "digits")
    publish.publish(good, prod, {"run": "exp/r1"})
    before = snapshot(prod)
    staged = len(storage.list_files(bad)) + 1  # the new version and its record
    backup = len(before) + 1  # the previous version and its mark
    writes = []
    real_write = storage.write_bytes

    def crash_mid_swap(uri, data, deadline=None):
        writes.append(uri)
        if len(writes) == staged + backup + 3:  # model.json, model.keras landed, then a crash
            raise StorageError(f"{uri}: injected crash")
        return real_write(uri, data, deadline)

    monkeypatch.setattr(storage, "write_bytes", crash_mid_swap)
    with pytest.raises(StorageError, match="injected crash"):
        publish.publish(bad, prod, {"run": "exp/r2"})
    monkeypatch.setattr(storage, "write_bytes", real_write)
    assert snapshot(prod) != before  # mid-swap: the previous version is whole aside
    assert "rolled back" in publish.recover(prod)
    assert snapshot(prod) == before
    assert storage.list_files(storage.join(gcs_root, "models")) == sorted(
        f"digits/{rel}" for rel in before)

    publish.publish(bad, prod, {"run": "exp/r3"})
    assert snapshot(prod) != before
    record = json.loads(storage.read_bytes(storage.join(prod, "promotion.json")))
    assert [h["run"] for h in record["history"]] == ["exp/r1", "exp/r3"]
    assert storage.list_files(storage.join(gcs_root, "models")) == sorted(
        f"digits/{rel}" for rel in storage.list_files(prod))
