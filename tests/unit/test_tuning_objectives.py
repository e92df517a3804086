"""Objectives, the Pareto front, the selection rule, the goal."""

import pytest

from tbpipe.components.common.errors import SettingError
from tbpipe.components.tuning.objectives import (
    NoFinishedTrial,
    Objective,
    best_trial,
    goal_met,
    pareto_front,
    parse_goal,
    parse_objective,
    parse_objectives,
)
from tbpipe.components.tuning.record import TrialRecord
from tbpipe.components.tuning.table import markdown_trial_table, trial_rows

ACC_PARAMS = parse_objectives(["val_accuracy:max", "params:min"])


def trial(number, acc, params, state="complete", **more):
    return TrialRecord(number, {"model.filters": params // 100}, state=state,
                       values={"val_accuracy": acc, "params": params}, **more)


def test_objectives_parse_with_their_usual_direction():
    assert parse_objective("val_accuracy:max") == Objective("val_accuracy", "maximize")
    assert parse_objective("latency") == Objective("latency", "minimize")
    assert parse_objective("val_loss:max").direction == "maximize"
    assert parse_objectives([]) == (Objective("val_accuracy", "maximize"),)
    for bad in ("f1:max", "val_accuracy:up"):
        with pytest.raises(SettingError, match="--objective"):
            parse_objective(bad)
    with pytest.raises(SettingError, match="each objective once"):
        parse_objectives(["params:min", "params:max"])


def test_pareto_front_and_the_smallest_model_within_half_a_percent():
    records = [trial(0, 0.950, 5000), trial(1, 0.960, 9000), trial(2, 0.958, 3000),
               trial(3, 0.940, 2000), trial(4, 0.930, 4000), trial(5, 0.961, 8000,
                                                                      state="failed"),
               trial(6, 0.957, 3000)]
    front = [r.number for r in pareto_front(records, ACC_PARAMS)]
    assert front == [1, 2, 3]  # 4 is beaten by 3, 0 by 2, 6 by 2; failed trials never count
    # within 0.5 % of 0.960 (>= 0.9552): 1, 2 and 6; the smallest are 2 and 6 (3000); then
    # the better accuracy: 2
    assert best_trial(records, ACC_PARAMS).number == 2
    assert best_trial(records, ACC_PARAMS[:1]).number == 1  # accuracy alone


def test_pruned_trials_are_chosen_only_when_none_completed():
    records = [trial(0, 0.5, 1000, state="pruned"), trial(1, 0.7, 1000, state="pruned"),
               TrialRecord(2, {}, state="failed", error="boom")]
    assert best_trial(records, ACC_PARAMS).number == 1
    with pytest.raises(NoFinishedTrial, match="no trial finished"):
        best_trial(records[2:], ACC_PARAMS)


def test_goals():
    goal = parse_goal("val_accuracy>=0.99")
    assert (goal.name, goal.op, goal.threshold) == ("val_accuracy", ">=", 0.99)
    records = [trial(0, 0.985, 1000), trial(1, 0.99, 1000, state="running")]
    assert not goal_met(records, goal)  # a running trial has not reached it yet
    assert goal_met([*records, trial(2, 0.991, 1000, state="pruned")], "val_accuracy>=0.99")
    assert goal_met(records, "params<=1000")
    for bad, words in (("val_accuracy=0.9", "NAME>=VALUE"), ("f1>=0.9", "not measured"),
                       ("val_accuracy>=nan", "finite")):
        with pytest.raises(SettingError, match=words):
            parse_goal(bad)


def test_the_trial_table_rows_and_markdown():
    records = [trial(0, 0.95, 5000, epochs_run=3), trial(1, 0.96, 3000, epochs_run=3),
               TrialRecord(2, {"model.filters": 10}, state="failed", error="OOM | killed"),
               trial(3, 0.80, 3000, state="pruned", epochs_run=1)]
    rows = trial_rows(records, ACC_PARAMS)
    assert [list(row) for row in rows][0] == ["trial", "state", "epochs_run", "val_accuracy",
                                              "params", "model.filters", "pareto", "best",
                                              "error"]
    assert [(r["state"], r["pareto"], r["best"]) for r in rows] == [
        ("complete", False, False), ("complete", True, True), ("failed", False, False),
        ("pruned", False, False)]
    assert rows[2]["val_accuracy"] is None and rows[2]["error"] == "OOM | killed"
    text = markdown_trial_table(rows)
    assert text.splitlines()[0].startswith("| trial | state |")
    assert "OOM \\| killed" in text
    assert "| 1 | complete | 3 | 0.96 | 3000 | 30 | yes | yes |" in text
