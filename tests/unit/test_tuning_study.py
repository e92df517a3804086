"""The study as one file per trial: suggestions seeded, rebuilt from the records, on a store."""

import json

import pytest

from tbpipe.components.common.errors import SettingError
from tbpipe.components.tuning.objectives import parse_objectives
from tbpipe.components.tuning.space import SearchSpace
from tbpipe.components.tuning.study import (
    fail_unfinished,
    read_trials,
    suggest_trials,
    trial_uri,
    write_trial,
)

SPACE = SearchSpace.parse(["learning_rate=1e-4..1e-1:log", "batch_size=32..256:int",
                           "model.filters=8|16|32"])
ACC = parse_objectives(["val_accuracy:max"])


def score(params):
    """A made-up result: best near learning_rate 1e-2 with 16 filters."""
    import math

    return 1.0 - abs(math.log10(params["learning_rate"]) + 2) / 4 - (
        params["model.filters"] != 16) * 0.1


def search(uri, algorithm, rounds=3, per_round=3, seed=7):
    for _ in range(rounds):
        for record in suggest_trials(uri, SPACE, algorithm, per_round, seed, ACC):
            write_trial(uri, record.replace(state="complete", epochs_run=2,
                                            values={"val_accuracy": score(record.params)}))
    return [record.params for record in read_trials(uri)]


@pytest.mark.parametrize("algorithm", ["tpe", "nsgaii"])
def test_the_same_flags_and_results_give_the_same_trials(tmp_path, algorithm):
    first = search(str(tmp_path / "a"), algorithm)
    assert first == search(str(tmp_path / "b"), algorithm)
    assert len(first) == 9 and len({json.dumps(p, sort_keys=True) for p in first}) == 9
    assert all(SPACE.contains(p) for p in first)
    assert first != search(str(tmp_path / "c"), algorithm, seed=8)


def test_records_round_trip_and_failed_or_running_trials_are_kept(tmp_path):
    uri = str(tmp_path / "study")
    new = suggest_trials(uri, SPACE, "tpe", 2, 1, ACC)
    assert [r.number for r in new] == [0, 1] and all(r.state == "running" for r in new)
    assert (tmp_path / "study" / "trial-00001.json").exists()
    write_trial(uri, new[0].replace(state="failed", error="ValueError: boom"))
    assert [r.number for r in fail_unfinished(uri, "the step ended without a result")] == [1]
    assert [(r.state, r.error) for r in read_trials(uri)] == [
        ("failed", "ValueError: boom"), ("failed", "the step ended without a result")]
    assert [r.number for r in suggest_trials(uri, SPACE, "tpe", 2, 1, ACC)] == [2, 3]


def test_a_grid_takes_each_point_once_then_stops(tmp_path):
    space = SearchSpace.parse(["model.filters=8|16", "batch_size=32|64"])
    uri = str(tmp_path / "grid")
    seen = [r.params for r in suggest_trials(uri, space, "grid", 3, 0, ACC)]
    seen += [r.params for r in suggest_trials(uri, space, "grid", 3, 0, ACC)]
    assert len(seen) == 4 and len({tuple(sorted(p.items())) for p in seen}) == 4
    assert suggest_trials(uri, space, "grid", 3, 0, ACC) == []


def test_a_study_refuses_other_settings_and_algorithms_their_limits(tmp_path):
    uri = str(tmp_path / "study")
    suggest_trials(uri, SPACE, "tpe", 1, 1, ACC)
    with pytest.raises(SettingError, match="other algorithm, seed"):
        suggest_trials(uri, SPACE, "random", 1, 2, ACC)
    with pytest.raises(SettingError, match="--algorithm"):
        suggest_trials(str(tmp_path / "x"), SPACE, "annealing", 1, 1, ACC)
    with pytest.raises(SettingError, match="one objective"):
        suggest_trials(str(tmp_path / "y"), SPACE, "cmaes", 1, 1,
                       parse_objectives(["val_accuracy", "params"]))


@pytest.mark.s3
def test_a_study_on_an_object_store(s3_root):
    uri = f"{s3_root}/study"
    params = search(uri, "tpe", rounds=2, per_round=2)
    assert len(params) == 4 and [r.state for r in read_trials(uri)] == ["complete"] * 4
    assert trial_uri(uri, 3) == f"{uri}/trial-00003.json"
