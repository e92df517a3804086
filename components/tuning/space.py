"""Search spaces: ``--tune KEY=SPACE``, parsed once where it enters, suggested through Optuna.

A SPACE is one of:

* ``LOW..HIGH`` a float range, ``LOW..HIGH:log`` the same sampled on a log scale;
* ``LOW..HIGH:int`` an integer range (``:int:log`` or ``:log:int`` on a log scale);
* ``A|B|C`` choices (numbers become numbers, ``true``/``false`` booleans, the rest text).

A KEY is a train setting (:data:`TRAIN_KEYS`, checked by the train config's own rules) or
``model.NAME``: a keyword argument of the user's model function (``--model
my_net.py:build`` with ``def build(input_shape, num_classes, *, filters=32)``), which
reaches the function through the train config's ``model_kwargs`` (:func:`trial_settings`).

What ``grid`` means (:meth:`SpaceAxis.grid_values`): every choice; every integer of an int
range with at most :data:`GRID_POINTS` values; otherwise :data:`GRID_POINTS` points spread
evenly over the range, ends included (on a log scale with ``:log``; rounded and deduplicated
for ints). So a float range takes five values in a grid.

Optuna is imported inside the functions that use it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tbpipe.components.common.errors import InputError, SettingError

#: The train settings ``--tune`` may search (fields of the train config).
TRAIN_KEYS = ("learning_rate", "batch_size", "epochs", "seed", "precision")
#: The prefix of a user model's keyword hyper-parameter (``model.filters``).
MODEL_PREFIX = "model."
#: Values a range axis takes in a grid (see the module's docstring).
GRID_POINTS = 5
KINDS = ("float", "int", "choice")
_INT_KEYS = ("batch_size", "epochs", "seed")
_NAME = re.compile(r"[A-Za-z_]\w*")
_FORMS = "LOW..HIGH, LOW..HIGH:log, LOW..HIGH:int or A|B|C"

Choice = str | int | float | bool


@dataclasses.dataclass(frozen=True)
class SpaceAxis:
    """One searched setting: its key and the values it may take.

    Attributes:
        key: A train setting (``learning_rate``) or ``model.NAME``.
        kind: ``float`` or ``int`` (a range from ``low`` to ``high``, ends included) or
            ``choice`` (one of ``choices``).
        low: The range's low end (ranges only).
        high: The range's high end (ranges only).
        log: Sample the range on a log scale.
        choices: The values of a ``choice`` axis, in the order given.
        text: The ``KEY=SPACE`` text it was parsed from.

    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Choice, ...] = ()
    text: str = ""

    @property
    def is_model_kwarg(self) -> bool:
        """Whether the key is a keyword argument of the user's model function."""
        return self.key.startswith(MODEL_PREFIX)

    def suggest(self, trial: Any) -> Choice:  # noqa: ANN401 - an optuna.Trial
        """The value ``trial`` (an ``optuna.Trial``) picks for this axis."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log)
        return trial.suggest_categorical(self.key, list(self.choices))

    def distribution(self) -> Any:  # noqa: ANN401 - an optuna distribution
        """The Optuna distribution of this axis (for trials rebuilt from records)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "float":
            return FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "int":
            return IntDistribution(self.low, self.high, log=self.log)
        return CategoricalDistribution(list(self.choices))

    def grid_values(self) -> tuple[Choice, ...]:
        """The values this axis takes in a grid search (see the module's docstring)."""
        if self.kind == "choice":
            return self.choices
        low, high = self.low, self.high
        if self.kind == "int" and high - low + 1 <= GRID_POINTS:
            return tuple(range(int(low), int(high) + 1))
        if self.log:
            a, b = math.log(low), math.log(high)
            points = [math.exp(a + (b - a) * i / (GRID_POINTS - 1)) for i in range(GRID_POINTS)]
        else:
            points = [low + (high - low) * i / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
        points[0], points[-1] = low, high  # exactly the ends, not exp(log(x))
        if self.kind == "int":
            return tuple(dict.fromkeys(min(max(round(p), low), high) for p in points))
        return tuple(float(p) for p in points)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The axes of a search, one per key, in the order given.

    Attributes:
        axes: The searched settings.

    """

    axes: tuple[SpaceAxis, ...] = ()

    def __post_init__(self) -> None:
        """SettingError naming ``--tune KEY`` when a key is given twice."""
        seen: set[str] = set()
        for axis in self.axes:
            if axis.key in seen:
                raise SettingError(f"--tune {axis.key}", axis.text,
                                   "given twice; give each key once")
            seen.add(axis.key)

    @classmethod
    def parse(cls, texts: Iterable[str]) -> SearchSpace:
        """The space of ``--tune`` values (``KEY=SPACE`` each)."""
        return cls(tuple(parse_space(text) for text in texts))

    @property
    def keys(self) -> tuple[str, ...]:
        """The searched keys, in order."""
        return tuple(axis.key for axis in self.axes)

    @property
    def texts(self) -> tuple[str, ...]:
        """The ``KEY=SPACE`` texts the axes came from (what recreates the space)."""
        return tuple(axis.text for axis in self.axes)

    def suggest(self, trial: Any) -> dict[str, Choice]:  # noqa: ANN401 - an optuna.Trial
        """The parameters ``trial`` picks, key to value, through ``trial.suggest_*``."""
        return {axis.key: axis.suggest(trial) for axis in self.axes}

    def distributions(self) -> dict[str, Any]:
        """Key to Optuna distribution."""
        return {axis.key: axis.distribution() for axis in self.axes}

    def grid(self) -> dict[str, list[Choice]]:
        """Key to its grid values (Optuna's ``GridSampler`` search space)."""
        return {axis.key: list(axis.grid_values()) for axis in self.axes}

    def grid_size(self) -> int:
        """How many points the full grid has."""
        return math.prod(len(axis.grid_values()) for axis in self.axes)

    def contains(self, params: Mapping[str, Any]) -> bool:
        """Whether ``params`` has exactly this space's keys, each value inside its axis."""
        if set(params) != set(self.keys):
            return False
        for axis in self.axes:
            value = params[axis.key]
            if axis.kind == "choice":
                if value not in axis.choices:
                    return False
            elif not (isinstance(value, int | float) and axis.low <= value <= axis.high):
                return False
        return True


def parse_space(text: str) -> SpaceAxis:
    """Parse one ``--tune KEY=SPACE`` value (the module's docstring lists the forms).

    Raises:
        SettingError: one line naming ``--tune KEY``, the value and the rule broken.

    """
    key, sep, space = str(text).partition("=")
    key, space = key.strip(), space.strip()
    if not sep or not key or not space:
        raise SettingError("--tune", text, f"give KEY=SPACE, SPACE one of {_FORMS}")
    _check_key(key, text)
    name = f"--tune {key}"
    if ".." in space:
        axis = _parse_range(key, space, text, name)
    elif "|" in space:
        axis = _parse_choices(key, space, text, name)
    else:
        raise SettingError(name, space, f"not a space; use {_FORMS} (at least two choices)")
    _check_values(axis, name)
    return axis


def trial_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's parameters as train config fields.

    Train keys as they are; ``model.NAME`` keys gathered into ``model_kwargs``, a JSON
    object (keys sorted), absent when there are none.
    """
    settings = {key: value for key, value in params.items() if not key.startswith(MODEL_PREFIX)}
    kwargs = {key[len(MODEL_PREFIX):]: value for key, value in params.items()
              if key.startswith(MODEL_PREFIX)}
    if kwargs:
        settings["model_kwargs"] = json.dumps(kwargs, sort_keys=True)
    return settings


def _check_key(key: str, text: str) -> None:
    if key.startswith(MODEL_PREFIX):
        if not _NAME.fullmatch(key[len(MODEL_PREFIX):]):
            raise SettingError("--tune", text, "model.NAME needs NAME to be a Python keyword "
                                               "argument name of the --model function")
        return
    if key not in TRAIN_KEYS:
        raise SettingError("--tune", text, f"cannot tune {key!r}; tune one of "
                           f"{', '.join(TRAIN_KEYS)} or model.NAME (a keyword argument of "
                           "the --model function)")


def _number(word: str, name: str, space: str) -> int | float:
    try:
        return int(word)
    except ValueError:
        pass
    try:
        value = float(word)
    except ValueError:
        raise SettingError(name, space, f"{word!r} is not a number; use {_FORMS}") from None
    if not math.isfinite(value):
        raise SettingError(name, space, f"{word!r} is not a finite number")
    return value


def _parse_range(key: str, space: str, text: str, name: str) -> SpaceAxis:
    bounds, *options = space.split(":")
    low_word, _, high_word = bounds.partition("..")
    low, high = _number(low_word.strip(), name, space), _number(high_word.strip(), name, space)
    flags = {option.strip() for option in options}
    unknown = flags - {"log", "int"}
    if unknown or len(options) != len(flags):
        raise SettingError(name, space, "a range takes :log and/or :int after it, once each")
    is_int = "int" in flags or (key in _INT_KEYS and isinstance(low, int)
                                and isinstance(high, int))
    if is_int and not (float(low).is_integer() and float(high).is_integer()):
        raise SettingError(name, space, "an :int range needs whole numbers at both ends")
    if key in _INT_KEYS and not is_int:
        raise SettingError(name, space, f"{key} is a whole number: give whole ends")
    if key == "precision":
        raise SettingError(name, space, "precision takes choices, e.g. float32|mixed_bfloat16")
    if not low < high:
        raise SettingError(name, space, "the low end must be below the high end")
    log = "log" in flags
    if log and low <= 0:
        raise SettingError(name, space, "a :log range needs a low end above 0")
    if is_int:
        return SpaceAxis(key, "int", int(low), int(high), log, text=text)
    return SpaceAxis(key, "float", float(low), float(high), log, text=text)


def _choice(word: str) -> Choice:
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(word)
    except ValueError:
        pass
    try:
        value = float(word)
    except ValueError:
        return word
    return value if math.isfinite(value) else word


def _parse_choices(key: str, space: str, text: str, name: str) -> SpaceAxis:
    words = [word.strip() for word in space.split("|")]
    if any(not word for word in words):
        raise SettingError(name, space, "an empty choice; separate choices with |, e.g. A|B")
    choices = tuple(_choice(word) for word in words)
    if len(set(map(repr, choices))) != len(choices):
        raise SettingError(name, space, "a choice is given twice; give each once")
    return SpaceAxis(key, "choice", choices=choices, text=text)


def _check_values(axis: SpaceAxis, name: str) -> None:
    """Every end or choice of a train key passes the train config's own checks."""
    if axis.is_model_kwarg:
        return
    from tbpipe.components.training.config import FitConfig

    values: Sequence[Any] = axis.choices if axis.kind == "choice" else (axis.low, axis.high)
    for value in values:
        if axis.key in _INT_KEYS and not (isinstance(value, int) and not isinstance(value, bool)):
            raise SettingError(name, value, f"{axis.key} takes whole numbers")
        try:
            FitConfig(**{axis.key: value})
        except SettingError as exc:
            raise SettingError(name, value, exc.rule) from None
        except InputError as exc:
            raise SettingError(name, value, str(exc)) from None
