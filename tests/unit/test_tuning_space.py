"""``--tune KEY=SPACE``: the forms parsed, the one-line errors, the grid, the train settings."""

import json

import pytest

from tbpipe.components.common.errors import SettingError
from tbpipe.components.tuning.space import GRID_POINTS, SearchSpace, parse_space, trial_settings


def test_the_four_forms():
    lr = parse_space("learning_rate=1e-4..1e-1:log")
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 0.1, True)
    batch = parse_space("batch_size=32..256:int")
    assert (batch.kind, batch.low, batch.high, batch.log) == ("int", 32, 256, False)
    assert parse_space("epochs=2..6").kind == "int"  # a whole-number setting, whole ends
    dropout = parse_space("model.dropout=0.1..0.5")
    assert (dropout.kind, dropout.low, dropout.high, dropout.is_model_kwarg) == (
        "float", 0.1, 0.5, True)
    assert parse_space("precision=float32|mixed_bfloat16").choices == (
        "float32", "mixed_bfloat16")
    assert parse_space("model.filters=8|16|32").choices == (8, 16, 32)
    assert parse_space("model.bn=true|false").choices == (True, False)


@pytest.mark.parametrize(("text", "words"), [
    ("learning_rate", "KEY=SPACE"),
    ("optimizer=adam|sgd", "cannot tune 'optimizer'"),
    ("model.2x=1|2", "model.NAME"),
    ("learning_rate=0.1..0.01", "low end must be below"),
    ("learning_rate=0..0.1:log", "above 0"),
    ("learning_rate=-1..0.1", "greater than 0"),  # the train config's own rule
    ("batch_size=0..64", "positive integer"),
    ("batch_size=16.5..64:int", "whole numbers"),
    ("batch_size=16|32.5", "whole numbers"),
    ("precision=float32|float64", "must be one of"),
    ("precision=1..2", "choices"),
    ("learning_rate=1e-3..abc", "not a number"),
    ("learning_rate=1e-3..1e-1:loog", ":log and/or :int"),
    ("model.filters=8||16", "empty choice"),
    ("model.filters=8|8", "given twice"),
    ("model.filters=8", "not a space"),
])
def test_bad_spaces_are_one_line_naming_the_key(text, words):
    with pytest.raises(SettingError) as info:
        parse_space(text)
    line = str(info.value)
    assert line.startswith("--tune") and words in line and "\n" not in line


def test_a_key_given_twice_is_refused():
    with pytest.raises(SettingError, match="--tune learning_rate.*given twice"):
        SearchSpace.parse(["learning_rate=0.1..0.2", "learning_rate=1e-3|1e-2"])


def test_the_grid_of_each_axis():
    space = SearchSpace.parse(["learning_rate=1e-4..1e-2:log", "batch_size=32..256:int",
                               "epochs=2..4", "precision=float32|mixed_bfloat16"])
    grid = space.grid()
    assert grid["learning_rate"] == pytest.approx([1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5, 1e-2])
    assert grid["batch_size"] == [32, 88, 144, 200, 256] and len(grid["batch_size"]) == GRID_POINTS
    assert grid["epochs"] == [2, 3, 4]  # a short int range: every value
    assert grid["precision"] == ["float32", "mixed_bfloat16"]
    assert space.grid_size() == 5 * 5 * 3 * 2


def test_trial_settings_put_the_model_keys_in_model_kwargs():
    settings = trial_settings({"learning_rate": 0.01, "model.filters": 16,
                               "model.dropout": 0.25})
    assert settings["learning_rate"] == 0.01
    assert json.loads(settings["model_kwargs"]) == {"filters": 16, "dropout": 0.25}
    assert "model_kwargs" not in trial_settings({"batch_size": 64})
