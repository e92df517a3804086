"""The promotion gate: its schema, its rules on real Keras models scored on a real Dataset."""

import math
import os

import numpy as np
import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.promotion.config import PromoteConfig
from tbpipe.components.promotion.gate import (
    RELATIVE_CHANGE,
    ExampleScores,
    GateError,
    _macro_f1,
    bootstrap_gains,
    check_gate,
    parse_gate,
    relative_change,
    score_examples,
    shorthand_gate,
)
from tests.helpers import write_dataset
from tests.unit.test_promote import CLASSES, SHAPE, row_model


def blind_to(model, k):
    """``model`` with class ``k``'s weights zeroed: its images tie, so class 0 is predicted."""
    weights, bias = model.layers[-1].get_weights()
    weights[:, k] = 0.0
    model.layers[-1].set_weights([weights, bias])
    return model


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """A perfect model, one blind to class 3 (accuracy 0.75) and one no better than chance."""
    from tbpipe.components.common.dataset import read_info

    root = str(tmp_path_factory.mktemp("gate") / "test")
    write_dataset(root, n=64, shape=SHAPE, classes=CLASSES, seed=3)
    names = read_info(root).class_names
    models = {"perfect": row_model(), "blind3": blind_to(row_model(), 3),
              "chance": row_model(skill=0.0)}
    return {name: score_examples(model, root, names, batch_size=16, model_uri=name)
            for name, model in models.items()}


def verdicts(blessing):
    return {(c.metric, c.kind): c.verdict for c in blessing.checks}


def test_scores_are_per_example_and_scikit_learns(scored):
    perfect, blind = scored["perfect"], scored["blind3"]
    assert len(perfect.labels) == 64 and perfect.metrics()["accuracy"] == 1.0
    assert blind.metrics()["accuracy"] == pytest.approx(np.mean(blind.labels != 3))
    precision, recall, _ = blind.per_class()
    assert recall[3] == 0.0 and recall[:3].tolist() == [1.0, 1.0, 1.0] and precision[0] < 1.0
    assert perfect.params == 8 * 8 * CLASSES + CLASSES and perfect.latency_ms > 0
    assert blind.metrics()["loss"] > perfect.metrics()["loss"]


def test_value_and_change_thresholds(scored):
    gate = parse_gate("""
metrics:
  accuracy: {lower_bound: 0.8, change: {absolute: 0.0, direction: higher}}
  loss: {change: {absolute: 0.0, direction: lower}}
  params: {upper_bound: 1000}
""")
    up = check_gate(gate, scored["perfect"], scored["blind3"])
    assert up.passed and verdicts(up) == {
        ("accuracy", "lower_bound"): "passed", ("accuracy (higher)", "change.absolute"): "passed",
        ("loss (lower)", "change.absolute"): "passed", ("params", "upper_bound"): "passed"}
    down = check_gate(gate, scored["blind3"], scored["perfect"])
    assert not down.passed and {k for k, v in verdicts(down).items() if v == "failed"} == {
        ("accuracy", "lower_bound"), ("accuracy (higher)", "change.absolute"),
        ("loss (lower)", "change.absolute")}
    assert down.summary().startswith("gate failed: accuracy lower_bound 0.75 >= 0.8: failed "
                                     "(3 of 4 checks failed)")
    loss = [c.line() for c in down.failed() if c.metric.startswith("loss")]
    assert loss[0].startswith("loss (lower) change.absolute +") and loss[0].endswith(
        " < 0: failed")
    small = check_gate(parse_gate("metrics: {params: {upper_bound: 10}}"), scored["perfect"],
                       None)
    assert not small.passed and small.checks[0].value == 260


def test_relative_is_defined_once_as_the_change_over_the_baselines_magnitude(scored):
    assert relative_change(0.9, 0.8) == pytest.approx(0.125)
    assert relative_change(-1.0, -2.0) == pytest.approx(0.5)  # better: positive, not -0.5
    assert relative_change(0.1, 0.0) == math.inf and relative_change(0.0, 0.0) == 0.0
    new, base = scored["perfect"], scored["blind3"]  # accuracy 1.0 vs 0.75: +33.3 %
    gain = (1.0 - base.metrics()["accuracy"]) / base.metrics()["accuracy"]
    for bound, verdict in ((gain - 0.01, "passed"), (gain + 0.01, "failed")):
        gate = parse_gate(f"metrics: {{accuracy: {{change: {{relative: {bound}, "
                          "direction: higher}}}")
        (check,) = check_gate(gate, new, base).checks
        assert check.kind == "change.relative" and check.value == pytest.approx(gain)
        assert check.verdict == verdict


def test_the_report_and_the_docs_state_the_one_definition_of_relative(scored):
    """The promote step's report prints RELATIVE_CHANGE under a table with a relative check."""
    from pathlib import Path

    from tbpipe.components.promotion.core import decide, render_report

    new, base = scored["perfect"], scored["blind3"]
    relative = parse_gate("metrics: {accuracy: {change: {relative: 0.1, direction: higher}}}")
    absolute = parse_gate("metrics: {accuracy: {change: {absolute: 0.1, direction: higher}}}")
    config = PromoteConfig(run_label="exp/r1")
    reports = {}
    for name, gate in (("relative", relative), ("absolute", absolute)):
        decision = decide(check_gate(gate, new, base), "prod/v1", config)
        reports[name] = render_report(decision, "prod", config)
    assert f"`change.relative`: {RELATIVE_CHANGE}" in reports["relative"]
    assert RELATIVE_CHANGE.split(",")[0] == "relative change = (new - baseline) / |baseline|"
    assert "(new - baseline)" not in reports["absolute"]  # said where it is used
    docs = Path(__file__).resolve().parents[2] / "docs" / "gate.md"
    assert RELATIVE_CHANGE in " ".join(docs.read_text().split())  # word for word


def test_per_class_thresholds_name_the_class(scored):
    gate = parse_gate("""
classes:
  "3": {recall: {lower_bound: 0.95}}
  "*": {recall: {change: {absolute: -0.02, direction: higher}}}
""")
    blessing = check_gate(gate, scored["blind3"], scored["perfect"])
    failed = {(c.metric, c.kind) for c in blessing.failed()}
    assert failed == {("class 3 recall", "lower_bound"),
                      ("class 3 recall (higher)", "change.absolute")}
    assert len(blessing.checks) == 1 + CLASSES
    assert check_gate(gate, scored["perfect"], scored["blind3"]).passed
    with pytest.raises(InputError, match="classes.9: the test set has no class '9'"):
        check_gate(parse_gate('classes: {"9": {f1: {lower_bound: 0.5}}}'), scored["perfect"],
                   None)


def test_the_first_run_checks_value_thresholds_only_and_says_so(scored):
    gate = parse_gate("""
metrics: {accuracy: {lower_bound: 0.7, change: {absolute: 0.0, direction: higher}}}
significance: 0.95
""")
    blessing = check_gate(gate, scored["blind3"], None)
    assert blessing.passed and blessing.first_run
    assert verdicts(blessing) == {("accuracy", "lower_bound"): "passed",
                                  ("accuracy (higher)", "change.absolute"): "skipped",
                                  ("accuracy gain", "significance"): "skipped"}
    assert blessing.summary() == ("gate passed (1 checks; first run: no baseline, value "
                                  "thresholds only)")
    assert not check_gate(parse_gate("metrics: {accuracy: {lower_bound: 0.9}}"),
                          scored["blind3"], None).passed


def synthetic(right):
    """200 examples of 4 classes, the first ``right`` predicted right."""
    labels = np.arange(200) % 4
    predicted = np.where(np.arange(200) < right, labels, (labels + 1) % 4)
    return ExampleScores(labels, predicted, np.zeros(200), 4, ("0", "1", "2", "3"), 1, 1.0)


def test_significance_a_lucky_small_gain_does_not_pass(scored):
    gate = parse_gate("significance: {confidence: 0.95, resamples: 2000, seed: 7}")
    lucky = check_gate(gate, synthetic(151), synthetic(150))  # +0.5 %: one example
    assert not lucky.passed and lucky.gain_interval[1] <= 0
    clear = check_gate(gate, synthetic(180), synthetic(150))  # +15 %
    assert clear.passed and clear.gain_interval[1] > 0.05
    assert clear.gain_interval[2] == pytest.approx(0.15, abs=0.01)
    real = check_gate(gate, scored["perfect"], scored["blind3"])
    assert real.passed and real.failed() == []
    again = check_gate(gate, synthetic(180), synthetic(150))
    assert again.gain_interval == clear.gain_interval  # seeded
    f1 = check_gate(parse_gate("significance: {confidence: 0.9, metric: macro_f1}"),
                    scored["blind3"], scored["perfect"])
    assert not f1.passed and f1.checks[0].metric == "macro_f1 gain at 0.9 confidence"


def test_the_bootstrap_is_paired_bounded_and_matches_scikit_learn(monkeypatch):
    from sklearn.metrics import f1_score

    from tbpipe.components.promotion import gate as gate_module

    rng = np.random.default_rng(0)
    truth, predicted = rng.integers(0, 5, (6, 40)), rng.integers(0, 5, (6, 40))
    want = [f1_score(t, p, labels=range(5), average="macro", zero_division=0)
            for t, p in zip(truth, predicted, strict=True)]
    assert _macro_f1(truth, predicted, 5) == pytest.approx(want)
    same = bootstrap_gains(synthetic(150), synthetic(150), "accuracy", 500, 0)
    assert same.shape == (500,) and not same.any()  # paired: a model never beats itself
    monkeypatch.setattr(gate_module, "_CHUNK_CELLS", 1000)  # 5 resamples per chunk
    chunked = bootstrap_gains(synthetic(180), synthetic(150), "macro_f1", 300, 1)
    monkeypatch.undo()
    assert np.array_equal(chunked, bootstrap_gains(synthetic(180), synthetic(150), "macro_f1",
                                                   300, 1))


def test_a_bad_gate_is_one_line_per_error_naming_the_key():
    with pytest.raises(GateError) as err:
        parse_gate("""
metrics:
  acuracy: {lower_bound: 0.9}
  accuracy: {lower_bound: high, change: {absolute: 0, direction: up}}
  loss: {lower_bound: 2, upper_bound: 1}
classes:
  "7": {recal: {lower_bound: 0.9}}
significance: 1.5
extra: 1
""", "gate.yaml")
    lines = str(err.value).splitlines()
    assert lines == [
        "gate.yaml: extra: unknown key; use metrics, classes or significance",
        "gate.yaml: metrics.acuracy: unknown metric; use one of accuracy, macro_f1, "
        "macro_precision, macro_recall, loss, params, latency_ms, drift_p_value",
        "gate.yaml: metrics.accuracy.lower_bound: must be a finite number, not 'high'",
        "gate.yaml: metrics.accuracy.change.direction: 'up' must be higher or lower",
        "gate.yaml: metrics.loss: lower_bound 2 is above upper_bound 1",
        "gate.yaml: classes.7.recal: unknown per-class metric; use one of precision, "
        "recall, f1",
        "gate.yaml: significance: 1.5 is outside [0.5, 1); e.g. 0.95",
    ]
    with pytest.raises(GateError, match=r"^g: not valid YAML \(line 1\)"):
        parse_gate("metrics: {accuracy: [", "g")
    with pytest.raises(GateError, match="significance.resamples: 10000000 must be an integer"):
        parse_gate("significance: {confidence: 0.9, resamples: 10000000}")


def test_the_shorthands_are_a_gate():
    assert PromoteConfig(promotion_metric="macro_f1", min_improvement=0.02).rules() == \
        shorthand_gate("macro_f1", 0.02) == parse_gate(
            "metrics: {macro_f1: {change: {absolute: 0.02, direction: higher}}}")
    with pytest.raises(InputError, match="gate='\\(a gate file\\)': give --gate or"):
        PromoteConfig(gate="metrics: {accuracy: {lower_bound: 0.5}}", min_improvement=0.1)


@pytest.mark.parametrize("gate, argv, line", [
    ("metrics: {acc: {lower_bound: 1}}", [],
     "--gate GATE: metrics.acc: unknown metric; use one of accuracy"),
    (None, [], "--gate GATE: cannot read it"),
    ("metrics: {accuracy: {lower_bound: 0.5}}", ["--force-promote"],
     "--force-promote=True: needs --reason TEXT"),
])
def test_run_refuses_a_bad_gate_or_a_force_without_reason_before_it_starts(
        gate, argv, line, tmp_path, monkeypatch, capsys):
    from tbpipe.pipelines.cli.main import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gate.yaml"
    if gate is not None:
        path.write_text(gate)
    assert main(["run", "--promote-to", "p", "--gate", str(path), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"tbpipe: error: {line.replace('GATE', str(path))}"), err
    assert err.count("\n") == 1, err
    assert os.listdir(tmp_path) == (["gate.yaml"] if gate is not None else [])
