"""``--tune``'s orchestration: flags, rounds compiled in, a round's stops, the best trial.

The study folder is a real local folder written by the tuning logic itself
(``tuning.study``); no TensorFlow runs here (the end-to-end run is
``tests/integration/test_tune_local.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tbpipe.components.common.errors import SettingError
from tbpipe.components.selection.config import TuneConfig
from tbpipe.components.selection.tuned import (
    TooManyFailedTrials,
    choose_tuned,
    suggest_round,
)
from tbpipe.components.tuning.study import read_trials, write_trial
from tbpipe.pipelines.cli.flags import sweep_from_args
from tbpipe.pipelines.cli.main import build_parser
from tbpipe.pipelines.training import compile_pipeline

SPACE = ("learning_rate=1e-4..3e-2:log", "batch_size=32..256:int")


def by_name(dag: dict) -> dict:
    return {task["taskInfo"]["name"]: (key, task) for key, task in dag["tasks"].items()}


def flags(*argv: str):  # noqa: ANN201
    return sweep_from_args(build_parser().parse_args(["run", *argv]))


def test_tune_flags_make_one_search_and_each_bad_one_is_one_line():
    tune = flags("--tune", SPACE[0], "--tune", SPACE[1], "--algorithm", "random", "--trials",
                 "7", "--parallel", "3", "--max-failed-trials", "1", "--tune-goal",
                 "val_accuracy>=0.99", "--objective", "val_accuracy:max", "--objective",
                 "params:min")
    assert tune == TuneConfig(SPACE, algorithm="random", trials=7, parallel=3, max_failed=1,
                              goal="val_accuracy>=0.99",
                              objectives=("val_accuracy:max", "params:min"))
    assert tune.rounds() == (3, 3, 1) and tune.keys == ("learning_rate", "batch_size")
    assert TuneConfig.from_json(tune.to_json()) == tune
    for argv, needle in [
        (["--trials", "3"], "--trials=3: needs --tune KEY=SPACE"),
        (["--tune", SPACE[0], "--sweep", "seed=1,2"], "cannot go with --sweep"),
        (["--tune", SPACE[0], "--parallel", "4", "--trials", "3"],
         "--parallel=4: must be at most --trials (3)"),
        (["--tune", SPACE[0], "--algorithm", "bayes"], "--algorithm='bayes': must be one of"),
        (["--tune", SPACE[0], "--pruner", "asha"], "--pruner='asha': must be one of"),
        (["--tune", SPACE[0], "--learning-rate", "0.1"], "is tuned by --tune learning_rate"),
        (["--tune", "lr=1..2"], "cannot tune 'lr'"),
    ]:
        with pytest.raises(SettingError) as caught:
            flags(*argv)
        assert needle in str(caught.value) and "\n" not in str(caught.value), argv


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> tuple[dict, dict]:
    root = tmp_path_factory.mktemp("tune")
    plain = compile_pipeline(str(root / "plain.yaml"))
    tuned = compile_pipeline(str(root / "tuned.yaml"),
                             sweep=TuneConfig(SPACE, trials=5, parallel=2))
    return tuple(next(yaml.load_all(Path(p).read_text(), Loader=yaml.CSafeLoader))
                 for p in (plain, tuned))


def test_the_search_is_rounds_of_parallel_for_each_after_the_last(compiled):
    plain, tuned = compiled
    assert plain["root"]["inputDefinitions"] == tuned["root"]["inputDefinitions"]
    top = by_name(tuned["root"]["dag"])
    assert "train" not in top
    rounds = [top[f"tune-round-{n}"] for n in (1, 2, 3)]
    tasks = tuned["root"]["dag"]["tasks"]
    suggests = [(key, tasks[key]) for key in ("suggest", "suggest-2", "suggest-3")]
    assert "tune-round-4" not in top and "suggest-4" not in tasks
    assert {task["taskInfo"]["name"] for _, task in suggests} == {"suggest"}
    for number, ((_, loop), (suggest_key, suggest)) in enumerate(
            zip(rounds, suggests, strict=True)):
        assert loop["iteratorPolicy"]["parallelismLimit"] == 2
        items = loop["parameterIterator"]["items"]["inputParameter"]
        assert items == f"pipelinechannel--{suggest_key}-Output"
        count = suggest["inputs"]["parameters"]["count"]["runtimeValue"]["constant"]
        assert count == (2, 2, 1)[number]
        if number:  # each round's suggest waits for the round before it
            assert rounds[number - 1][0] in suggest["dependentTasks"]
        body = by_name(tuned["components"][loop["componentRef"]["name"]]["dag"])
        params = body["train"][1]["inputs"]["parameters"]
        for name in ("trial", "tune_study", "tune_trial", "learning_rate", "batch_size"):
            assert params[name]["parameterExpressionSelector"] == \
                f'parseJson(string_value)["{name}"]', name
        assert params["pruner"]["runtimeValue"]["constant"] == "median"
        assert params["epochs"]["componentInputParameter"] == "pipelinechannel--epochs"
    select_key, select = top["select-tuned"]
    assert rounds[-1][0] in select["dependentTasks"]
    evaluate = top["evaluate"][1]["inputs"]["artifacts"]["model"]["taskOutputArtifact"]
    assert evaluate == {"outputArtifactKey": "best_model", "producerTask": select_key}
    # finetune trains with the best trial's batch size, seed and precision
    finetunes = [task for component in tuned["components"].values() if "dag" in component
                 for task in component["dag"]["tasks"].values()
                 if task["taskInfo"]["name"] == "finetune"]
    assert len(finetunes) == 2
    for task in finetunes:
        for name in ("batch_size", "seed", "precision"):
            assert task["inputs"]["parameters"][name] == {
                "componentInputParameter": f"pipelinechannel--select-tuned-{name}"}, name


def record(study: str, number: int, state: str, accuracy: float | None = None,
           error: str = "", model_uri: str = "") -> None:
    (found,) = [r for r in read_trials(study) if r.number == number]
    values = {"val_accuracy": accuracy} if accuracy is not None else {}
    write_trial(study, found.replace(state=state, values=values, error=error, epochs_run=1,
                                     model_uri=model_uri))


def test_a_round_goes_on_after_failures_within_the_budget_then_fails_in_one_line(tmp_path):
    study = str(tmp_path / "study")
    tune = TuneConfig(SPACE, algorithm="random", trials=6, parallel=2, max_failed=1)
    first = suggest_round(study, tune, 2, seed=3, now=100.0)
    assert [t["trial"] for t in first] == ["trial-01", "trial-02"]
    assert [t["tune_trial"] for t in first] == [0, 1]
    assert all(t["tune_study"] == study and set(t) == {
        "trial", "tune_study", "tune_trial", "learning_rate", "batch_size"} for t in first)
    record(study, 0, "complete", 0.5)
    record(study, 1, "failed", error="ValueError: boom")
    second = suggest_round(study, tune, 2, seed=3, now=101.0)  # one failure: goes on
    assert [t["trial"] for t in second] == ["trial-03", "trial-04"]
    record(study, 2, "complete", 0.6)
    # trial-04's step died without a result: the next round marks it failed, then stops
    with pytest.raises(TooManyFailedTrials) as caught:
        suggest_round(study, tune, 2, seed=3, now=102.0)
    line = str(caught.value)
    assert line.startswith("2 failed trial(s), more than --max-failed-trials 1 allows")
    assert "trial-02: ValueError: boom" in line and "trial-04: its train step ended" in line
    assert [r.state for r in read_trials(study)] == ["complete", "failed", "complete",
                                                     "failed"]


def test_the_same_flags_and_results_give_the_same_trials(tmp_path):
    tune = TuneConfig(SPACE, algorithm="tpe", trials=4, parallel=2)
    a = suggest_round(str(tmp_path / "a"), tune, 2, seed=5, now=0.0)
    b = suggest_round(str(tmp_path / "b"), tune, 2, seed=5, now=0.0)
    strip = [{k: v for k, v in t.items() if k != "tune_study"} for t in a]
    assert strip == [{k: v for k, v in t.items() if k != "tune_study"} for t in b]


def test_the_goal_met_or_the_time_up_suggests_nothing(tmp_path):
    study = str(tmp_path / "study")
    tune = TuneConfig(SPACE, algorithm="random", trials=6, parallel=2, max_failed=3,
                      goal="val_accuracy>=0.9", timeout_s=60)
    suggest_round(study, tune, 2, seed=1, now=1000.0)
    record(study, 0, "pruned", 0.5)
    record(study, 1, "complete", 0.8)
    assert len(suggest_round(study, tune, 2, seed=1, now=1030.0)) == 2  # neither yet
    assert suggest_round(study, tune, 2, seed=1, now=1060.0) == []  # time up
    late = str(tmp_path / "goal")
    suggest_round(late, tune, 2, seed=1, now=0.0)
    record(late, 0, "complete", 0.95)
    record(late, 1, "failed", error="x")
    assert suggest_round(late, tune, 2, seed=1, now=1.0) == []  # goal met


def model_folder(path: Path, marker: str) -> str:
    path.mkdir(parents=True)
    (path / "model.json").write_text(json.dumps({"image_shape": [8, 8, 1], "num_classes": 4,
                                                 "marker": marker}))
    (path / "model.keras").write_text(marker)
    return str(path)


def test_the_best_trial_goes_on_with_its_settings_and_the_table_shows_every_state(tmp_path):
    study = str(tmp_path / "study")
    tune = TuneConfig(("batch_size=32..256:int", "precision=float32|mixed_bfloat16"),
                      algorithm="random", trials=4, parallel=4, max_failed=1)
    trials = suggest_round(study, tune, 4, seed=2, now=0.0)
    record(study, 0, "complete", 0.7, model_uri=model_folder(tmp_path / "m0", "zero"))
    record(study, 1, "pruned", 0.4, model_uri=model_folder(tmp_path / "m1", "one"))
    record(study, 2, "complete", 0.9, model_uri=model_folder(tmp_path / "m2", "two"))
    record(study, 3, "failed", error="OSError: no space")
    best = str(tmp_path / "best")
    outcome = choose_tuned(study, tune, best, {"batch_size": 32, "seed": 42,
                                               "precision": "auto"})
    assert outcome["best_trial"] == "trial-03"
    assert open(os.path.join(best, "model.keras")).read() == "two"
    assert outcome["settings"] == {"batch_size": trials[2]["batch_size"], "seed": 42,
                                   "precision": trials[2]["precision"]}
    rows = {row["trial"]: row for row in outcome["trials"]}
    assert [rows[t]["state"] for t in sorted(rows)] == ["complete", "pruned", "complete",
                                                        "failed"]
    assert rows["trial-04"]["error"] == "OSError: no space" and rows["trial-03"]["best"]
    assert outcome["stopped"] == ""
    record(study, 0, "failed", error="again")  # two failures: over the budget
    with pytest.raises(TooManyFailedTrials, match=r"^2 failed trial\(s\)"):
        choose_tuned(study, tune, str(tmp_path / "best2"), {"batch_size": 32, "seed": 42,
                                                            "precision": "auto"})
    assert not os.path.exists(tmp_path / "best2")


def test_tbpipe_runs_counts_a_searchs_pruned_and_failed_trials(tmp_path, capsys):
    from tbpipe.pipelines.cli.main import main
    from tests.unit.test_runs import SELECTION, fake_run

    root = str(tmp_path / "logs")
    rows = [{"trial": f"trial-0{i}", "state": state}
            for i, state in enumerate(["complete", "pruned", "pruned", "failed"], start=1)]
    fake_run(root, "exp", "tuned", 1_800_000_000,
             selection={**SELECTION, "sweep": {"best_trial": "trial-01", "trials": rows}})
    fake_run(root, "exp", "plain", 1_700_000_000)
    assert main(["runs", "--log-root", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "trials" in lines[0].split()
    assert "4 (1 failed, 2 pruned)" in lines[1] and lines[2].split()[-2] == "-"


@pytest.mark.s3
def test_rounds_and_the_choice_read_the_study_back_from_an_object_store(s3_root, tmp_path):
    from tbpipe.components.common import storage

    study = f"{s3_root}/exp/run/study"
    tune = TuneConfig(SPACE, algorithm="random", trials=4, parallel=2, max_failed=1)
    first = suggest_round(study, tune, 2, seed=4, now=10.0)
    model = f"{s3_root}/models/m1"
    storage.write_bytes(f"{model}/model.json", json.dumps(
        {"image_shape": [8, 8, 1], "num_classes": 4}).encode())
    storage.write_bytes(f"{model}/model.keras", b"weights")
    record(study, 0, "failed", error="boom")
    record(study, 1, "complete", 0.8, model_uri=model)
    second = suggest_round(study, tune, 2, seed=4, now=20.0)
    assert [t["trial"] for t in first + second] == [f"trial-0{i}" for i in range(1, 5)]
    record(study, 2, "pruned", 0.5)
    record(study, 3, "complete", 0.7)
    outcome = choose_tuned(study, tune, str(tmp_path / "best"), {
        "batch_size": 32, "seed": 42, "precision": "auto"})
    assert outcome["best_trial"] == "trial-02"
    assert (tmp_path / "best" / "model.keras").read_bytes() == b"weights"
    assert [row["state"] for row in outcome["trials"]] == ["failed", "complete", "pruned",
                                                           "complete"]


def test_each_trials_place_on_the_pareto_front_goes_into_its_hparams(tmp_path):
    """Two objectives: select-tuned writes ``hparam/pareto`` (1 on the front, 0 off it) into
    each trial's folder, over the NaN its train step declared, at that same step."""
    import math

    from tbpipe.components.common.tensorboard.writer import log_hparams, open_writer
    from tbpipe.components.tuning.objectives import PARETO_METRIC
    from tests.helpers import read_scalars

    study = str(tmp_path / "study")
    tune = TuneConfig(("batch_size=32..256:int",), algorithm="random", trials=4, parallel=4,
                      max_failed=1, objectives=("val_accuracy:max", "params:min"))
    suggest_round(study, tune, 4, seed=2, now=0.0)
    # (val_accuracy, params): 0 and 1 on the front, 2 beaten by 0 on both, 3 failed
    figures = {0: (0.9, 500.0), 1: (0.8, 100.0), 2: (0.85, 600.0)}
    logs = {number: str(tmp_path / "logs" / f"trial-{number}") for number in range(4)}
    for number, (accuracy, params) in figures.items():
        with open_writer(logs[number]) as writer:  # as a trial's train step leaves it
            log_hparams(writer, {"tune_trial": number}, {"hparam/val_accuracy": accuracy,
                                                          PARETO_METRIC: math.nan}, step=7)
        (found,) = [r for r in read_trials(study) if r.number == number]
        write_trial(study, found.replace(
            state="complete", values={"val_accuracy": accuracy, "params": params},
            log_dir=logs[number], model_uri=model_folder(tmp_path / f"m{number}", str(number))))
    (failed,) = [r for r in read_trials(study) if r.number == 3]
    write_trial(study, failed.replace(state="failed", error="boom", log_dir=logs[3]))

    outcome = choose_tuned(study, tune, str(tmp_path / "best"), {"batch_size": 32, "seed": 42,
                                                                 "precision": "auto"})
    assert {row["trial"]: row["pareto"] for row in outcome["trials"]} == {
        "trial-01": True, "trial-02": True, "trial-03": False, "trial-04": False}
    for number, (step, value) in {0: (7, 1.0), 1: (7, 1.0), 2: (7, 0.0), 3: (0, 0.0)}.items():
        points = read_scalars(logs[number])[PARETO_METRIC]
        assert points[-1] == (step, value), number  # what TensorBoard shows: the last value
