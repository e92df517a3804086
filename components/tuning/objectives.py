"""What a search optimizes, which trials are best, and when it may stop early.

Objectives (``--objective NAME:max|min``, in order; the first is the primary one, the one
pruning watches when it is a per-epoch metric):

* ``val_accuracy``, ``val_loss``, ``accuracy``, ``loss``: the trial's last epoch;
* ``params``: the model's parameter count;
* ``latency``: seconds per example of the model's prediction on a batch (measured by the
  train step once training ends).

The selection rule (:func:`best_trial`): among the finished trials (complete, else pruned:
both keep their model), take those within :data:`TOLERANCE` (0.5 %, relative) of the best
value of the first objective; among them the best on the second objective, then the
third...; ties go to the lower trial number. With one objective: the best value. So
``--objective val_accuracy:max --objective params:min`` picks the smallest model within
0.5 % of the best accuracy, a trial of the Pareto front (:func:`pareto_front`).
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Sequence

from tbpipe.components.common.errors import SettingError, TbpipeError
from tbpipe.components.tuning.record import FINISHED, TrialRecord

#: Objective name to its usual direction (the one taken when ``:max``/``:min`` is left out).
OBJECTIVES = {"val_accuracy": "maximize", "val_loss": "minimize", "accuracy": "maximize",
              "loss": "minimize", "params": "minimize", "latency": "minimize"}
#: The per-epoch metrics (what pruning can watch).
EPOCH_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
#: The selection rule's tolerance on the first objective: relative, 0.005 = 0.5 %.
TOLERANCE = 0.005
#: The HParams metric of a trial's place on the Pareto front: 1 on it, 0 off it, NaN until
#: the search ends (a trial's train step declares it; select-tuned writes it).
PARETO_METRIC = "hparam/pareto"
_DIRECTIONS = {"max": "maximize", "min": "minimize"}
_GOAL = re.compile(r"\s*([A-Za-z_]\w*)\s*(>=|<=|>|<)\s*(\S+)\s*")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective: a measured name and its direction.

    Attributes:
        name: One of :data:`OBJECTIVES`.
        direction: ``maximize`` or ``minimize`` (Optuna's words).

    """

    name: str
    direction: str

    @property
    def text(self) -> str:
        """``name:max`` or ``name:min``, what :func:`parse_objective` reads back."""
        return f"{self.name}:{self.direction[:3]}"

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.direction == "maximize" else a < b


DEFAULT_OBJECTIVES = (Objective("val_accuracy", "maximize"),)


def parse_objective(text: str) -> Objective:
    """``val_accuracy:max``, ``params:min``, ``latency`` (its usual direction).

    Raises:
        SettingError: one line naming ``--objective``.

    """
    name, _, direction = str(text).strip().partition(":")
    if name not in OBJECTIVES:
        raise SettingError("--objective", text, f"use one of {', '.join(OBJECTIVES)}, "
                           "optionally :max or :min")
    if direction and direction not in _DIRECTIONS:
        raise SettingError("--objective", text, "the direction is :max or :min")
    return Objective(name, _DIRECTIONS[direction] if direction else OBJECTIVES[name])


def parse_objectives(texts: Sequence[str]) -> tuple[Objective, ...]:
    """Several ``--objective`` values (none: :data:`DEFAULT_OBJECTIVES`); each name once."""
    objectives = tuple(parse_objective(text) for text in texts) or DEFAULT_OBJECTIVES
    names = [objective.name for objective in objectives]
    if len(set(names)) != len(names):
        raise SettingError("--objective", ", ".join(texts), "name each objective once")
    return objectives


def pruning_objective(objectives: Sequence[Objective]) -> Objective | None:
    """The objective pruning watches: the first one, when it is a per-epoch metric."""
    first = objectives[0] if objectives else None
    return first if first is not None and first.name in EPOCH_METRICS else None


class NoFinishedTrial(TbpipeError):
    """No trial finished with every objective measured."""


def candidates(records: Sequence[TrialRecord],
               objectives: Sequence[Objective]) -> list[TrialRecord]:
    """The trials selection chooses among: complete ones (pruned ones if none is), measured."""
    def measured(record: TrialRecord) -> bool:
        return all(isinstance(record.values.get(o.name), int | float)
                   and math.isfinite(record.values[o.name]) for o in objectives)

    complete = [r for r in records if r.state == "complete" and measured(r)]
    return complete or [r for r in records if r.state == "pruned" and measured(r)]


def pareto_front(records: Sequence[TrialRecord],
                 objectives: Sequence[Objective]) -> list[TrialRecord]:
    """The candidates no other candidate beats on every objective (Optuna's best_trials).

    With one objective: the trials holding the best value.
    """
    chosen = candidates(records, objectives)
    if not chosen:
        return []
    if len(objectives) == 1:
        objective = objectives[0]
        best = max if objective.direction == "maximize" else min
        top = best(r.values[objective.name] for r in chosen)
        return [r for r in chosen if r.values[objective.name] == top]
    import optuna
    from optuna.trial import create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=[o.direction for o in objectives])
    for record in chosen:
        study.add_trial(create_trial(values=[record.values[o.name] for o in objectives],
                                     user_attrs={"tbpipe_number": record.number}))
    on_front = {trial.user_attrs["tbpipe_number"] for trial in study.best_trials}
    return [r for r in chosen if r.number in on_front]


def best_trial(records: Sequence[TrialRecord], objectives: Sequence[Objective],
               tolerance: float = TOLERANCE) -> TrialRecord:
    """The trial that goes on, by the rule in the module's docstring.

    Raises:
        NoFinishedTrial: no trial finished with every objective measured.

    """
    pool = candidates(records, objectives)
    if not pool:
        states = ", ".join(sorted({r.state for r in records})) or "no trials"
        raise NoFinishedTrial(f"no trial finished with {', '.join(o.name for o in objectives)} "
                              f"measured ({len(records)} trial(s): {states}); see the trial "
                              "table's errors")
    first = objectives[0]
    values = [r.values[first.name] for r in pool]
    top = max(values) if first.direction == "maximize" else min(values)
    margin = abs(top) * tolerance
    pool = [r for r in pool if abs(r.values[first.name] - top) <= margin]
    for objective in (*objectives[1:], first):
        sign = -1.0 if objective.direction == "maximize" else 1.0
        best = min(sign * r.values[objective.name] for r in pool)
        pool = [r for r in pool if sign * r.values[objective.name] == best]
    return min(pool, key=lambda r: r.number)


@dataclasses.dataclass(frozen=True)
class Goal:
    """A ``--tune-goal``: stop searching once a finished trial reaches it.

    Attributes:
        name: An objective's name (:data:`OBJECTIVES`).
        op: ``>=``, ``<=``, ``>`` or ``<``.
        threshold: The value compared with.

    """

    name: str
    op: str
    threshold: float

    @property
    def text(self) -> str:
        """The goal as it is written (``val_accuracy>=0.99``)."""
        return f"{self.name}{self.op}{self.threshold:g}"

    def reached_by(self, record: TrialRecord) -> bool:
        """Whether ``record`` (finished) reaches the goal."""
        value = record.values.get(self.name)
        return (record.state in FINISHED and isinstance(value, int | float)
                and _OPS[self.op](value, self.threshold))


def parse_goal(text: str) -> Goal:
    """``val_accuracy>=0.99``: a name of :data:`OBJECTIVES`, a comparison, a finite number.

    Raises:
        SettingError: one line naming ``--tune-goal``.

    """
    match = _GOAL.fullmatch(str(text))
    if not match:
        raise SettingError("--tune-goal", text, "write NAME>=VALUE (or <=, >, <), e.g. "
                           "val_accuracy>=0.99")
    name, op, word = match.groups()
    if name not in OBJECTIVES:
        raise SettingError("--tune-goal", text, f"{name!r} is not measured; use one of "
                           f"{', '.join(OBJECTIVES)}")
    try:
        threshold = float(word)
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise SettingError("--tune-goal", text, f"{word!r} is not a finite number")
    return Goal(name, op, threshold)


def goal_met(records: Sequence[TrialRecord], goal: Goal | str) -> bool:
    """Whether a finished trial (complete or pruned) reaches ``goal`` (parsed if text)."""
    goal = parse_goal(goal) if isinstance(goal, str) else goal
    return any(goal.reached_by(record) for record in records)
