import pytest
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from tbpipe.components import evaluate
from tests.helpers import read_scalars, write_dataset
from tests.unit.test_evaluate import save_tiny_model


def run_evaluate(tmp_path, model_dir, test_dir, **params):
    outputs = {
        "metrics": Metrics(uri=str(tmp_path / "metrics")),
        "classification_metrics": ClassificationMetrics(uri=str(tmp_path / "cm")),
        "report": Markdown(uri=str(tmp_path / "report.md")),
        "html_report": HTML(uri=str(tmp_path / "report.html")),
    }
    returned = evaluate.python_func(
        model=Model(uri=model_dir), test_data=Dataset(uri=test_dir), **outputs,
        log_root=str(tmp_path / "logs"), experiment="exp", run_name="", job_name="job-7",
        **params)
    return returned, outputs


def test_evaluate_component(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    test_dir = str(tmp_path / "test")
    write_dataset(test_dir, n=40, seed=5)
    returned, out = run_evaluate(tmp_path, model_dir, test_dir, accuracy_target=0.0,
                                 step_name="evaluate-finetuned")

    meta = out["metrics"].metadata
    assert returned.accuracy == pytest.approx(meta["accuracy"])
    assert returned.meets_target is True and meta["meets_target"] == 1.0
    assert {"loss", "macro_f1"} <= set(meta)
    matrix = out["classification_metrics"].metadata["confusionMatrix"]
    assert [a["displayName"] for a in matrix["annotationSpecs"]] == ["0", "1", "2", "3"]
    rows = [r["row"] for r in matrix["rows"]]
    assert sum(map(sum, rows)) == 40
    assert sum(rows[k][k] for k in range(4)) == round(meta["accuracy"] * 40)
    report = (tmp_path / "report.md").read_text()
    assert "regexInput=exp%2Fjob-7" in report
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Misclassified test images</h2>" in page and "regexInput=exp%2Fjob-7" in page
    scalars = read_scalars(str(tmp_path / "logs" / "exp" / "job-7" / "evaluate-finetuned"))
    assert scalars["eval/accuracy"][0][1] == pytest.approx(meta["accuracy"])


def test_evaluate_component_misses_target(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model", epochs=0)
    test_dir = str(tmp_path / "test")
    write_dataset(test_dir, n=20, seed=5)
    returned, out = run_evaluate(tmp_path, model_dir, test_dir, accuracy_target=1.0)
    assert returned.accuracy < 1.0
    assert returned.meets_target is False
    assert out["metrics"].metadata["meets_target"] == 0.0
    assert (tmp_path / "logs" / "exp" / "job-7" / "evaluate").is_dir()


def test_evaluate_component_bad_input_is_one_line(tmp_path, capsys):
    test_dir = str(tmp_path / "test")
    write_dataset(test_dir, n=8)
    with pytest.raises(SystemExit) as exited:
        run_evaluate(tmp_path, str(tmp_path / "no-model"), test_dir)
    assert exited.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-model: not a tbpipe Model" in err[0]
    assert not (tmp_path / "report.md").exists()
    assert not (tmp_path / "report.html").exists()
