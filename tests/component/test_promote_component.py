import json

from kfp.dsl import Artifact, Dataset, Markdown, Metrics

from tbpipe.components import promote
from tbpipe.components.common.run_summary import read_run_summary
from tests.helpers import write_dataset
from tests.unit.test_promote import row_model, save


def run_promote(tmp_path, model_dir, test_dir, run, **params):
    metrics, report = Metrics(uri=str(tmp_path / run / "metrics")), Markdown(
        uri=str(tmp_path / run / "report.md"))
    blessing = Artifact(uri=str(tmp_path / run / "blessing"))
    (tmp_path / run).mkdir()
    selection = json.dumps({"final_model": "trained", "final_accuracy": 0.5,
                            "accuracy": {"trained": 0.5}, "model_uri": model_dir})
    returned = promote.python_func(
        selection=selection, test_data=Dataset(uri=test_dir), metrics=metrics, report=report,
        blessing=blessing, log_root=str(tmp_path / "logs"), promote_to=str(tmp_path / "prod"),
        experiment="exp", run_name=run, job_name="job-7", **params)
    return returned, metrics.metadata, report, json.loads(open(blessing.path).read())


def test_promote_component_outputs_the_decision_everywhere(tmp_path):
    test_dir = str(tmp_path / "test")
    write_dataset(test_dir, n=40, seed=5)
    good, bad = save(row_model(), tmp_path / "good"), save(row_model(skill=0.0), tmp_path / "bad")

    returned, meta, _, blessing = run_promote(tmp_path, good, test_dir, "r1")
    assert blessing["passed"] and blessing["first_run"]
    assert returned.decision == "promoted" and meta["promoted"] == 1.0
    assert meta["new_accuracy"] == 1.0 and "baseline_accuracy" not in meta

    returned, meta, report, blessing = run_promote(tmp_path, bad, test_dir, "r2",
                                                   promotion_metric="macro_f1",
                                                   min_improvement=0.01)
    assert not blessing["passed"] and blessing["summary"].startswith(
        "gate failed: macro_f1 (higher) change.absolute")
    assert summary_line_names(returned, "gate failed: macro_f1 (higher) change.absolute")
    assert returned.decision == "kept baseline" and meta["promoted"] == 0.0
    assert meta["baseline_macro_f1"] == 1.0 > meta["new_macro_f1"]
    summary = read_run_summary(str(tmp_path / "logs"), "exp", "r2")
    assert json.loads(returned.summary) == summary
    assert summary["promotion"]["decision"] == "kept baseline"
    assert summary["promotion"]["metric"] == "macro_f1" and summary["test_accuracy"] == 0.5
    assert "promote" in summary["steps"]
    assert "**kept baseline: new macro_f1" in open(report.path).read()


def summary_line_names(returned, words):
    """The run summary's promotion line (what tbpipe run prints) holds ``words``."""
    return words in json.loads(returned.summary)["promotion"]["line"]


def test_a_forced_promotion_records_its_reason(tmp_path):
    test_dir = str(tmp_path / "test")
    write_dataset(test_dir, n=40, seed=5)
    good, bad = save(row_model(), tmp_path / "good"), save(row_model(skill=0.0), tmp_path / "bad")
    run_promote(tmp_path, good, test_dir, "r1")
    gate = "metrics: {accuracy: {lower_bound: 0.9}}"
    returned, _, _, blessing = run_promote(tmp_path, bad, test_dir, "r2", gate=gate,
                                           force_promote=True, reason="hotfix for 7s")
    assert returned.decision == "promoted" and not blessing["passed"]
    record = json.loads((tmp_path / "prod" / "promotion.json").read_text())
    assert record["current"]["force_reason"] == "hotfix for 7s" and record["current"]["forced"]
    assert record["current"]["gate"] == gate and record["aliases"] == {"champion": "v2"}
