import json

from kfp.dsl import Dataset, Markdown, Metrics

from tbpipe.components import promote
from tbpipe.components.common.run_summary import read_run_summary
from tests.helpers import write_dataset
from tests.unit.test_promote import row_model, save


def run_promote(tmp_path, model_dir, test_dir, run, **params):
    metrics, report = Metrics(uri=str(tmp_path / run / "metrics")), Markdown(
        uri=str(tmp_path / run / "report.md"))
    (tmp_path / run).mkdir()
    selection = json.dumps({"final_model": "trained", "final_accuracy": 0.5,
                            "accuracy": {"trained": 0.5}, "model_uri": model_dir})
    returned = promote.python_func(
        selection=selection, test_data=Dataset(uri=test_dir), metrics=metrics, report=report,
        log_root=str(tmp_path / "logs"), promote_to=str(tmp_path / "prod"), experiment="exp",
        run_name=run, job_name="job-7", **params)
    return returned, metrics.metadata, report


def test_promote_component_outputs_the_decision_everywhere(tmp_path):
    test_dir = str(tmp_path / "test")
    write_dataset(test_dir, n=40, seed=5)
    good, bad = save(row_model(), tmp_path / "good"), save(row_model(skill=0.0), tmp_path / "bad")

    returned, meta, _ = run_promote(tmp_path, good, test_dir, "r1")
    assert returned.decision == "promoted" and meta["promoted"] == 1.0
    assert meta["new_accuracy"] == 1.0 and "baseline_accuracy" not in meta

    returned, meta, report = run_promote(tmp_path, bad, test_dir, "r2",
                                         promotion_metric="macro_f1", min_improvement=0.01)
    assert returned.decision == "kept baseline" and meta["promoted"] == 0.0
    assert meta["baseline_macro_f1"] == 1.0 > meta["new_macro_f1"]
    summary = read_run_summary(str(tmp_path / "logs"), "exp", "r2")
    assert json.loads(returned.summary) == summary
    assert summary["promotion"]["decision"] == "kept baseline"
    assert summary["promotion"]["metric"] == "macro_f1" and summary["test_accuracy"] == 0.5
    assert "promote" in summary["steps"]
    assert "**kept baseline: new macro_f1" in open(report.path).read()
