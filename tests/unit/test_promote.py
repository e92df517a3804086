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


def data_digest(folder):
    """A Dataset's digest, from its bytes: sha256 of its image shape (JSON) and its shards."""
    from tbpipe.components.common.dataset import read_info

    info = read_info(folder)
    digest = hashlib.sha256(json.dumps(list(info.image_shape)).encode())
    for name, _ in info.shards:
        digest.update(storage.read_bytes(storage.join(folder, name)))
    return f"sha256:{digest.hexdigest()}"


def run_promote(world, tmp_path, model, prod, name, **settings):
    test, _, _ = world
    config = PromoteConfig(run_label=f"exp/{name}", **settings)
    return promote_model(model, test, str(prod), "", str(tmp_path / name / "promote"),
                         str(tmp_path / f"{name}.md"), config)


def example_scores(accuracy, n=20, classes=CLASSES):
    """Per-example scores of a model right on the first ``accuracy * n`` examples."""
    from tbpipe.components.promotion.gate import ExampleScores

    labels = np.arange(n) % classes
    predicted = labels.copy()
    wrong = np.arange(n) >= round(accuracy * n)
    predicted[wrong] = (labels[wrong] + 1) % classes
    return ExampleScores(labels, predicted, np.where(wrong, 2.0, 0.1), classes,
                         tuple(map(str, range(classes))), 100, 1.0)


def blessing_of(new, base, config):
    from tbpipe.components.promotion.gate import check_gate

    return check_gate(config.rules(), example_scores(new),
                      example_scores(base) if base is not None else None)


@pytest.mark.parametrize("new, base, settings, promoted, words", [
    (0.9, None, {}, True, "no baseline: the first model is promoted; gate passed (0 checks; "
                          "first run"),
    (0.9, 0.8, {}, True, "gate passed (1 checks)"),
    (0.8, 0.8, {}, False, "gate failed: accuracy (higher) change.absolute +0 > 0: failed"),
    (0.85, 0.8, {"min_improvement": 0.1}, False,
     "gate failed: accuracy (higher) change.absolute +0.05 > 0.1: failed"),
    (0.7, 0.8, {"force_promote": True, "reason": "hotfix"}, True,
     "forced by --force-promote (hotfix); gate failed"),
    (0.7, 0.8, {"promotion_metric": "macro_f1"}, False, "gate failed: macro_f1 (higher)"),
])
def test_the_rule(new, base, settings, promoted, words):
    config = PromoteConfig(**settings)
    decision = decide(blessing_of(new, base, config), "b" if base else "", config)
    assert decision.promoted is promoted and words in decision.reason, decision.reason
    assert decision.line().startswith("promoted" if promoted else "kept baseline")
    assert decision.blessing["passed"] is (promoted and "forced" not in words)


def test_unknown_metric_and_bad_improvement_are_one_line():
    with pytest.raises(SettingError, match="promotion_metric='auc': must be one of accuracy, "
                                           "macro_f1"):
        PromoteConfig(promotion_metric="auc")
    with pytest.raises(SettingError, match="min_improvement"):
        PromoteConfig(min_improvement=1.5)
    with pytest.raises(SettingError, match="force_promote=True: needs --reason TEXT"):
        PromoteConfig(force_promote=True, reason=" ")


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
    assert first.line().endswith("(no baseline: the first model is promoted; gate passed (0 "
                                 "checks; first run: no baseline, value thresholds only); "
                                 "production is v1)")
    assert first.version == "v1" and publish.current_model(str(prod)) == str(prod / "v1")
    version = snapshot(str(prod / "v1"))  # the model, its SavedModel, how it got there
    assert {k: v for k, v in version.items() if k not in ("blessing.json", "version.json")
            } == snapshot(good)
    blessing = json.loads((prod / "v1" / "blessing.json").read_text())
    assert blessing["passed"] and blessing["first_run"] and blessing["baseline"] is None
    record = json.loads((prod / "promotion.json").read_text())
    assert record["current"]["run"] == "exp/r1" and len(record["history"]) == 1
    assert record["current"]["version"] == "v1" and record["aliases"] == {"champion": "v1"}
    assert record["current"]["files"] == [*storage.list_files(good), "blessing.json",
                                          "version.json"]
    entry = json.loads((prod / "v1" / "version.json").read_text())
    assert entry["parent"] == "" and entry["data_digest"] == data_digest(test)  # the scored data
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
    blessing = read_text(str(tmp_path / "r2" / "promote"), "promote/blessing")
    assert blessing.startswith("**gate failed: accuracy (higher) change.absolute -0.75 > 0: "
                               "failed (1 of 1 checks failed)**")
    assert "| accuracy (higher) | change.absolute | -0.75 | 1 | 0 | **failed** |" in blessing
    report = (tmp_path / "r2.md").read_text()
    assert "**kept baseline: new accuracy" in report and "vs baseline 1.0000" in report
    assert "## Blessing" in report and blessing in report

    forced = run_promote(world, tmp_path, bad, prod, "r3", force_promote=True,
                         reason="the old one leaks")
    assert forced.promoted and "forced by --force-promote (the old one leaks)" in forced.reason
    history = json.loads((prod / "promotion.json").read_text())["history"]
    assert [h["run"] for h in history] == ["exp/r1", "exp/r3"] and history[1]["forced"]
    assert [h["version"] for h in history] == ["v1", "v2"] and forced.version == "v2"
    assert history[1]["force_reason"] == "the old one leaks" and history[1]["parent"] == "v1"
    assert not history[1]["blessed"]
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
                           str(tmp_path / "r2.md"), PromoteConfig(force_promote=True,
                                                                  reason="broken"))
    assert forced.promoted and "the baseline is broken" in forced.reason
    assert forced.baseline_scores is None and forced.version == "v1"


@pytest.mark.parametrize("new, base", [
    ({"accuracy": float("nan"), "macro_f1": 0.5}, {"accuracy": 0.8, "macro_f1": 0.8}),
    ({"accuracy": 0.9, "macro_f1": 0.9}, {"accuracy": float("nan"), "macro_f1": 0.8}),
    ({"accuracy": float("inf"), "macro_f1": 0.9}, None),
])
def test_the_rule_refuses_non_finite_scores(new, base):
    from tbpipe.components.promotion.gate import Blessing

    blessing = Blessing(True, (), base is None, new, base)
    with pytest.raises(InputError, match="not finite"):
        decide(blessing, "b" if base else "", PromoteConfig(force_promote=True, reason="r"))


def test_a_promotion_into_the_log_root_is_refused(world, tmp_path):
    _, good, _ = world
    test, _, _ = world
    with pytest.raises(InputError, match="is the log root"):
        promote_model(good, test, str(tmp_path / "logs" / "prod"), "",
                      str(tmp_path / "logs" / "e" / "r" / "promote"), str(tmp_path / "r.md"),
                      PromoteConfig(), log_root=str(tmp_path / "logs"))
    assert not (tmp_path / "logs").exists()


def test_each_promotion_points_the_inference_service_at_the_champion(world, tmp_path,
                                                                     monkeypatch, capsys):
    """On KubeStandIn, a stand-in Kubernetes API server (a TEST DOUBLE: no KServe runs)."""
    from tbpipe.components.promotion import inference_service
    from tests.kube_standin import KubeStandIn

    _, good, bad = world
    prod = tmp_path / "prod"
    with KubeStandIn() as kube:
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        kube.put_set("inferenceservices", inference_service.inference_service_manifest(
            "clf", "team", "pvc://claim/prod/serving", "v0"))
        first = run_promote(world, tmp_path, good, prod, "r1", inference_service="team/clf")
        assert first.version == "v1" and os.readlink(prod / "serving") == "v1/saved_model"
        out = capsys.readouterr().out.splitlines()
        assert "promote: inference service team/clf: pods rolled to serve v1 (storageUri " \
               "pvc://claim/prod/serving, the volume's serving link, unchanged)" in out
        assert out[-1] == f"promote: production is {prod}/v1 (serve {prod}/serving, which " \
                          "follows champion)"
        assert kube.patches == [("inferenceservices", "clf", {"spec": {"predictor": {
            "annotations": {"tbpipe/champion": "v1"}}}})]  # a local registry: pods roll
        assert not run_promote(world, tmp_path, bad, prod, "r2",
                               inference_service="team/clf").promoted
        assert len(kube.patches) == 1  # kept: nothing to point
        before = snapshot(str(prod))
        with pytest.raises(InputError, match="InferenceService team/nope: not found"):
            run_promote(world, tmp_path, good, prod, "r3", inference_service="team/nope")
        assert snapshot(str(prod)) == before and len(kube.patches) == 1  # refused first
