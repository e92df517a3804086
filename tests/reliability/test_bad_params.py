"""Parameters out of range, an unknown runner, malformed --params-file/--node-selector.

At the CLI (``run``, ``submit``, ``compile``): exit 1 (checked values) or 2 (argparse), one
``tbpipe...error`` line, nothing created. At the component level: SystemExit(1) and one line
before any output, log or checkpoint folder exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from tbpipe.components import evaluate, finetune, preprocess, train
from tests.helpers import write_dataset
from tests.reliability.support import cli, one_error_line

RUN_CASES = {
    "epochs-zero": (["--epochs", "0"], 1, r"--epochs=0: must be a positive integer"),
    "epochs-negative": (["--epochs", "-3"], 1, r"--epochs=-3: must be a positive integer"),
    "epochs-not-a-number": (["--epochs", "two"], 2, r"--epochs: invalid int value: 'two'"),
    "finetune-epochs-zero": (["--finetune-epochs", "0"], 1,
                             r"--finetune-epochs=0: must be a positive integer"),
    "learning-rate-zero": (["--learning-rate", "0"], 1,
                           r"--learning-rate=.*: must be greater than 0"),
    "finetune-learning-rate-negative": (["--finetune-learning-rate=-1e-4"], 1,
                                        r"--finetune-learning-rate=.*: must be greater than 0"),
    "batch-size-zero": (["--batch-size", "0"], 1, r"--batch-size=0: must be a positive integer"),
    "fractions-sum-to-one": (["--val-fraction", "0.5", "--test-fraction", "0.5"], 1,
                             r"--val-fraction \+ --test-fraction=1\.0: must be below 1"),
    "val-fraction-above-one": (["--val-fraction", "1.5"], 1,
                               r"--val-fraction=1\.5: must be in \[0, 1\)"),
    "test-fraction-negative": (["--test-fraction", "-0.1"], 1, r"in \[0, 1\)"),
    "accuracy-target-above-one": (["--accuracy-target", "1.5"], 1,
                                  r"--accuracy-target=1\.5: outside \[0, 1\]"),
    "accuracy-target-negative": (["--accuracy-target", "-0.1"], 1,
                                 r"--accuracy-target=-0\.1: outside \[0, 1\]"),
    "unknown-finetune-mode": (["--finetune", "sometimes"], 1,
                              r"--finetune='sometimes': must be one of auto, always, never"),
    "freeze-layers-negative": (["--freeze-layers", "-1"], 1,
                               r"--freeze-layers=-1: must be 0 or a positive integer"),
    "learning-rate-inf": (["--learning-rate", "inf"], 1,
                          r"--learning-rate=inf: must be a finite number \(not inf or nan\)"),
    "learning-rate-nan": (["--learning-rate", "nan"], 1, r"--learning-rate=nan: must be a finite"),
    "finetune-learning-rate-inf": (["--finetune-learning-rate", "inf"], 1,
                                   r"--finetune-learning-rate=inf: must be a finite number"),
    "val-fraction-nan": (["--val-fraction", "nan"], 1, r"--val-fraction=nan: must be a finite"),
    "accuracy-target-inf": (["--accuracy-target", "inf"], 1,
                            r"--accuracy-target=inf: must be a finite number"),
    "seed-negative": (["--seed", "-1"], 1, r"--seed=-1: must be a non-negative integer up to "
                                           r"4294967295 \(2\*\*32-1, the seeds numpy and "
                                           r"TensorFlow accept\)"),
    "seed-above-2-32": (["--seed", str(2**32)], 1, r"--seed=4294967296: must be a non-negative"),
    "epochs-above-int32": (["--epochs", str(2**31)], 1,
                           r"--epochs=2147483648: must be at most 2147483647 \(2\*\*31-1, "
                           r"TensorFlow counts it in int32\)"),
    "finetune-epochs-huge": (["--finetune-epochs", str(10**30)], 1,
                             r"--finetune-epochs=10{30}: must be at most 2147483647"),
    "batch-size-above-int32": (["--batch-size", str(2**31)], 1,
                               r"--batch-size=2147483648: must be at most 2147483647"),
    "experiment-with-a-slash": (["--experiment", "a/b"], 1,
                                r"experiment name 'a/b' is not allowed"),
    "run-name-dotdot": (["--run-name", ".."], 1, r"run name '\.\.' is not allowed"),
    "unknown-runner": (["--runner", "kubernetes"], 2,
                       r"tbpipe run: error: argument --runner: invalid choice: 'kubernetes'"),
}


@pytest.mark.parametrize("name", sorted(RUN_CASES))
def test_run_refuses_bad_parameters_before_anything_runs(name, tmp_path):
    args, code, needle = RUN_CASES[name]
    proc = cli("run", *args, "--log-root", str(tmp_path / "logs"),
               "--pipeline-root", str(tmp_path / "kfp"))
    one_error_line(proc, needle, code=code)
    assert not (tmp_path / "kfp").exists() and not (tmp_path / "logs").exists()


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> str:
    from tbpipe.pipelines.placement import CompileOptions
    from tbpipe.pipelines.training import compile_pipeline

    return compile_pipeline(str(tmp_path_factory.mktemp("pkg") / "pipeline.yaml"),
                            CompileOptions())


SUBMIT_CASES = {
    "param-without-value": (["--epochs"], 2, r"argument --epochs: expected one argument"),
    "param-not-a-number": (["--epochs", "many"], 2,
                           r"argument --epochs: invalid int value: 'many'"),
    "param-unknown": (["--epohcs", "3"], 2, r"unrecognized arguments: --epohcs 3"),
    "param-epochs-zero": (["--epochs", "0"], 1, r"--epochs=0: must be a positive integer"),
    "param-learning-rate-negative": (["--learning-rate", "-0.1"], 1,
                                     r"--learning-rate=.*: must be greater than 0"),
    "param-fractions": (["--val-fraction", "0.7", "--test-fraction", "0.4"], 1,
                        r"must be below 1"),
    "param-accuracy-target": (["--accuracy-target", "95"], 1,
                              r"--accuracy-target=95\.0: outside \[0, 1\]"),
    "param-learning-rate-inf": (["--learning-rate", "inf"], 1,
                                r"--learning-rate=inf: must be a finite number"),
    "param-accuracy-target-nan": (["--accuracy-target", "nan"], 1,
                                  r"--accuracy-target=nan: must be a finite number"),
    "param-seed-above-2-32": (["--seed", f"{2**32}"], 1,
                              r"--seed=4294967296: must be a non-negative integer up to"),
    "param-epochs-above-int32": (["--epochs", f"{2**31}"], 1,
                                 r"--epochs=2147483648: must be at most 2147483647"),
    "param-run-name-dotdot": (["--run-name", ".."], 1, r"run name '\.\.' is not allowed"),
    "params-file-resume-not-a-boolean": (["--params-file", "RESUME_MAYBE"], 1,
                                         r"--params-file .*: resume: expected true or false"),
    "request-timeout-zero": (["--request-timeout", "0"], 1,
                             r"--request-timeout=0\.0: must be greater than 0"),
    "request-timeout-inf": (["--request-timeout", "inf"], 1,
                            r"--request-timeout=inf: must be a finite number"),
    "node-selector-without-equals": (["--node-selector", "pool"], 2,
                                     r"argument --node-selector: expected KEY=VALUE"),
}


@pytest.mark.parametrize("name", sorted(SUBMIT_CASES))
def test_submit_refuses_bad_parameters_before_contacting_kfp(name, package, tmp_path):
    resume_maybe = tmp_path / "params.yaml"
    resume_maybe.write_text("resume: maybe\n")
    args, code, needle = SUBMIT_CASES[name]
    package_args = [] if "node-selector" in name else ["--package", package]
    # Port 9 (discard) has no KFP server: an error about it would mean the check came late.
    args = [str(resume_maybe) if a == "RESUME_MAYBE" else a for a in args]
    proc = cli("submit", "--endpoint", "http://127.0.0.1:9", *package_args,
               "--log-root", "gs://bucket/logs", *args)
    line = one_error_line(proc, needle, code=code)
    assert "127.0.0.1:9" not in line


COMPILE_CASES = {
    "node-selector-without-equals": (["--node-selector", "pool"], 2,
                                     r"tbpipe compile: error: argument --node-selector: "
                                     r"expected KEY=VALUE, got 'pool'"),
    "node-selector-empty-value": (["--node-selector", "pool="], 2, r"expected KEY=VALUE"),
    "gpu-count-zero": (["--gpu-count", "0"], 1, r"--gpu-count must be >= 1 \(got 0\)"),
    "retries-negative": (["--retries", "-1"], 1, r"--retries must be >= 0"),
    "cpu-not-a-quantity": (["--cpu", "train=lots"], 1,
                           r"--cpu train: 'lots' is not a Kubernetes cpu quantity"),
    "cpu-unknown-step": (["--cpu", "trian=2"], 2, r"unknown step 'trian'"),
}


@pytest.mark.parametrize("name", sorted(COMPILE_CASES))
def test_compile_refuses_bad_options_and_writes_nothing(name, tmp_path):
    args, code, needle = COMPILE_CASES[name]
    proc = cli("compile", "--package", str(tmp_path / "p.yaml"), *args)
    one_error_line(proc, needle, code=code)
    assert not (tmp_path / "p.yaml").exists()


# ---- component level ------------------------------------------------------------------------

WHERE = dict(experiment="exp", run_name="r1", job_name="job")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Dataset]:
    root = tmp_path_factory.mktemp("data")
    for split, seed in (("train", 0), ("val", 1)):
        write_dataset(str(root / split), n=16, seed=seed)
    return {"train_data": Dataset(uri=str(root / "train")),
            "val_data": Dataset(uri=str(root / "val"))}


def exits_with_one_line(capsys, step: str, needle: str, call) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    one_error_line(captured.err, rf"^tbpipe: {step}: error: ", needle)


TRAIN_CASES = {
    "epochs-zero": ({"epochs": 0}, r"epochs=0: must be a positive integer"),
    "epochs-negative": ({"epochs": -2}, r"epochs=-2: must be a positive integer"),
    "batch-size-zero": ({"batch_size": 0}, r"batch_size=0: must be a positive integer"),
    "learning-rate-zero": ({"learning_rate": 0.0}, r"learning_rate=0\.0: must be greater than 0"),
    "learning-rate-negative": ({"learning_rate": -1e-3}, r"learning_rate=-0\.001: must be"),
    "learning-rate-inf": ({"learning_rate": float("inf")}, r"learning_rate=inf: must be a finite"),
    "learning-rate-nan": ({"learning_rate": float("nan")}, r"learning_rate=nan: must be a finite"),
    "seed-above-2-32": ({"seed": 2**32}, r"seed=4294967296: must be a non-negative integer up"),
    "seed-negative": ({"seed": -1}, r"seed=-1: must be a non-negative integer up to"),
    "epochs-above-int32": ({"epochs": 2**31}, r"epochs=2147483648: must be at most 2147483647"),
    "batch-size-above-int32": ({"batch_size": 2**40}, r"batch_size=1099511627776: must be at"),
    "flush-secs-zero": ({"flush_secs": 0}, r"flush_secs=0: must be a positive integer"),
}


@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_train_component_refuses_bad_settings(name, data, tmp_path, capsys):
    settings, needle = TRAIN_CASES[name]
    model = Model(uri=str(tmp_path / "model"))
    exits_with_one_line(capsys, "train", needle, lambda: train.python_func(
        **data, model=model, metrics=Metrics(uri=str(tmp_path / "m")),
        log_root=str(tmp_path / "logs"), **WHERE, **settings))
    assert not (tmp_path / "model").exists() and not (tmp_path / "logs").exists()


FINETUNE_CASES = {
    "epochs-zero": ({"epochs": 0}, r"epochs=0: must be a positive integer"),
    "learning-rate-zero": ({"learning_rate": 0.0}, r"learning_rate=0\.0: must be greater"),
    "freeze-layers-negative": ({"freeze_layers": -1}, r"freeze_layers=-1: must be 0 or"),
    "learning-rate-inf": ({"learning_rate": float("inf")}, r"learning_rate=inf: must be a finite"),
    "epochs-above-int32": ({"epochs": 2**31}, r"epochs=2147483648: must be at most"),
    "seed-above-2-32": ({"seed": 2**32}, r"seed=4294967296: must be a non-negative integer"),
}


@pytest.mark.parametrize("name", sorted(FINETUNE_CASES))
def test_finetune_component_refuses_bad_settings(name, data, tmp_path, capsys):
    settings, needle = FINETUNE_CASES[name]
    exits_with_one_line(capsys, "finetune", needle, lambda: finetune.python_func(
        model=Model(uri=str(tmp_path / "no-model")), **data,
        finetuned_model=Model(uri=str(tmp_path / "tuned")),
        metrics=Metrics(uri=str(tmp_path / "m")), log_root=str(tmp_path / "logs"),
        **WHERE, **settings))
    assert not (tmp_path / "tuned").exists() and not (tmp_path / "logs").exists()


PREPROCESS_CASES = {
    "val-fraction-one": ({"val_fraction": 1.0}, r"val_fraction=1\.0: must be in \[0, 1\)"),
    "test-fraction-negative": ({"test_fraction": -0.1}, r"test_fraction=-0\.1: must be in"),
    "fractions-sum-to-one": ({"val_fraction": 0.4, "test_fraction": 0.6},
                             r"val_fraction \+ test_fraction=1\.0: must be below 1"),
    "seed-negative": ({"seed": -1}, r"seed=-1: must be a non-negative integer"),
    "seed-above-2-32": ({"seed": 2**32}, r"seed=4294967296: must be a non-negative integer up"),
    "val-fraction-nan": ({"val_fraction": float("nan")}, r"val_fraction=nan: must be a finite"),
    "test-fraction-inf": ({"test_fraction": float("inf")}, r"test_fraction=inf: must be a fin"),
}


@pytest.mark.parametrize("name", sorted(PREPROCESS_CASES))
def test_preprocess_component_refuses_bad_settings(name, tmp_path, capsys):
    settings, needle = PREPROCESS_CASES[name]
    outs = {f"{s}_data": Dataset(uri=str(tmp_path / s)) for s in ("train", "val", "test")}
    exits_with_one_line(capsys, "preprocess", needle, lambda: preprocess.python_func(
        data="builtin:digits", **outs, stats=Metrics(uri=str(tmp_path / "stats")),
        log_root=str(tmp_path / "logs"), **WHERE, **settings))
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == []


@pytest.mark.parametrize("target", [1.5, -0.01, 95.0])
def test_evaluate_component_refuses_a_target_outside_0_1(target, data, tmp_path, capsys):
    exits_with_one_line(capsys, "evaluate", rf"accuracy_target={re.escape(str(target))}: "
                        r"outside \[0, 1\]; pass a fraction such as 0\.95",
                        lambda: evaluate.python_func(
                            model=Model(uri=str(tmp_path / "no-model")),
                            test_data=data["val_data"], metrics=Metrics(uri=str(tmp_path / "m")),
                            classification_metrics=ClassificationMetrics(uri=str(tmp_path / "c")),
                            report=Markdown(uri=str(tmp_path / "report")),
                            html_report=HTML(uri=str(tmp_path / "report.html")),
                            log_root=str(tmp_path / "logs"), **WHERE, accuracy_target=target))
    assert not (tmp_path / "report").exists() and not (tmp_path / "logs").exists()
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize(("fractions", "needle"), [
    ({"val_fraction": 0.001}, r"the val split would get 0 of 1797 rows; raise val_fraction"),
    ({"val_fraction": 0.0}, r"the val split would get 0 of 1797 rows"),
    ({"test_fraction": 0.001}, r"the test split would get 0 of 1797 rows; raise test_fraction"),
])
def test_preprocess_component_refuses_fractions_that_leave_a_split_empty(fractions, needle,
                                                                         tmp_path, capsys):
    outs = {f"{s}_data": Dataset(uri=str(tmp_path / "out" / s)) for s in ("train", "val", "test")}
    exits_with_one_line(capsys, "preprocess", r"builtin:digits: " + needle,
                        lambda: preprocess.python_func(
                            data="builtin:digits", **outs, stats=Metrics(uri=str(tmp_path / "st")),
                            log_root=str(tmp_path / "logs"), **WHERE, **fractions))
    assert not list((tmp_path / "out").glob("*"))  # no Dataset, nothing half-written
    assert not (tmp_path / "logs" / "exp" / "r1" / "preprocess").exists()


@pytest.mark.parametrize("target", [float("inf"), float("nan")])
def test_evaluate_component_refuses_a_target_that_is_not_finite(target, data, tmp_path, capsys):
    exits_with_one_line(capsys, "evaluate", rf"accuracy_target={target}: must be a finite number",
                        lambda: evaluate.python_func(
                            model=Model(uri=str(tmp_path / "no-model")),
                            test_data=data["val_data"], metrics=Metrics(uri=str(tmp_path / "m")),
                            classification_metrics=ClassificationMetrics(uri=str(tmp_path / "c")),
                            report=Markdown(uri=str(tmp_path / "report")),
                            html_report=HTML(uri=str(tmp_path / "report.html")),
                            log_root=str(tmp_path / "logs"), **WHERE, accuracy_target=target))
    assert not (tmp_path / "report").exists() and not (tmp_path / "logs").exists()
    assert not (tmp_path / "report.html").exists()
