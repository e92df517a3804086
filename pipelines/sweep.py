"""Hyper-parameter searches: ``--sweep``'s fixed trials and ``--tune``'s adaptive search.

A sweep is a compile-time shape of the pipeline, not a run-time parameter: the trials are
the loop's items, written into the compiled YAML, so a pipeline without a sweep keeps its
DAG exactly (one train step). ``--sweep learning_rate=0.003,0.001 --sweep batch_size=32,128``
is the grid of every combination (in the order given, the last key varying fastest);
``--sweep-samples N`` picks N of them at random, seeded (:data:`SAMPLE_SEED`), so the same
flags always give the same trials. Each trial is ``trial-NN`` (from ``trial-01``); its
values are checked by the train step's config, like the plain flags.

``--tune KEY=SPACE`` (with ``--algorithm``, ``--pruner``, ``--trials``, ``--parallel``,
``--max-failed-trials``, ``--tune-goal``, ``--tune-timeout``, ``--objective``) is a search
suggested as it goes (:func:`parse_tune` builds its
:class:`~tbpipe.components.selection.config.TuneConfig`): rounds of trials, each round
suggested from every result before it (``tbpipe.pipelines.training.tune_trials``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Sequence

from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.common.limits import MAX_SWEEP_TRIALS
from tbpipe.components.common.naming import trial_name
from tbpipe.components.registry import param_table
from tbpipe.components.selection.config import TuneConfig

#: The train step's parameters a sweep may vary (PipelineParams names, as ``--sweep`` takes).
SWEEPABLE = ("epochs", "batch_size", "learning_rate", "seed", "precision", "model")
#: The seed of ``--sweep-samples``' picks.
SAMPLE_SEED = 0


def train_argument(key: str) -> str:
    """The train step's argument (its config field) a sweepable parameter sets."""
    return param_table()[key].field or key


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The hyper-parameters to try, and how many trials may run at once.

    Attributes:
        axes: ``(parameter, values)`` pairs: a PipelineParams name from :data:`SWEEPABLE`
            and the values it takes (typed: ``int`` for counts, ``float`` for the rate).
        samples: Random picks from the grid (seeded); 0: every combination.
        max_parallel: Trials running at once on a cluster (the loop's parallelism); 0: all.

    """

    axes: tuple[tuple[str, tuple], ...]
    samples: int = 0
    max_parallel: int = 0

    def __post_init__(self) -> None:
        """SettingError (one line naming the flag) for a sweep tbpipe cannot run."""
        from tbpipe.components.training.config import TrainConfig

        if not self.axes:
            raise SettingError("--sweep", "", "give at least one KEY=V1,V2,...")
        # The grid's size is a product: checked from the counts, before any trial is built
        # or any value is checked (a grid of 10**12 combinations costs nothing here).
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) \
                or self.samples < 0:
            raise SettingError("--sweep-samples", self.samples, "must be a positive integer")
        if self.samples > MAX_SWEEP_TRIALS:
            raise SettingError("--sweep-samples", self.samples,
                               f"more than {MAX_SWEEP_TRIALS} trials; ask for fewer")
        if not self.samples and self.grid_size > MAX_SWEEP_TRIALS:
            raise SettingError("--sweep", f"{self.grid_size} trials",
                               f"more than {MAX_SWEEP_TRIALS}; pick some with --sweep-samples N")
        seen = set()
        for key, values in self.axes:
            flag = f"--sweep {key}"
            if key not in SWEEPABLE:
                raise SettingError("--sweep", key, "is not a train parameter a sweep can "
                                   f"vary; use one of {', '.join(SWEEPABLE)}")
            if key in seen:
                raise SettingError(flag, key, "is swept twice; give its values in one --sweep")
            seen.add(key)
            if not values:
                raise SettingError(flag, "", "has no values; give one or more, e.g. "
                                   f"--sweep {key}=V1,V2")
            if len(set(values)) != len(values):
                raise SettingError(flag, ",".join(map(str, values)), "repeats a value")
            for value in values:  # checked by the train step's own config, as the flags are
                try:
                    TrainConfig(**{train_argument(key): value})
                except SettingError as exc:
                    raise SettingError(flag, value, exc.rule) from None
                except InputError as exc:  # a model spec's line names --model: name --sweep
                    raise SettingError(flag, value, str(exc).partition(": ")[2]) from None
        object.__setattr__(self, "axes", tuple(  # typed once: a model is a ModelSpec
            (key, tuple(map(param_table()[key].parse, values))
             if param_table()[key].parse else values) for key, values in self.axes))
        if self.samples > self.grid_size:
            raise SettingError("--sweep-samples", self.samples,
                               f"must be at most the grid's {self.grid_size} trials")
        if isinstance(self.max_parallel, bool) or not isinstance(self.max_parallel, int) \
                or self.max_parallel < 0:
            raise SettingError("--max-parallel", self.max_parallel,
                               "must be 0 (no limit) or a positive integer")

    @property
    def keys(self) -> tuple[str, ...]:
        """The swept parameters, in the order given."""
        return tuple(key for key, _ in self.axes)

    @property
    def grid_size(self) -> int:
        """How many combinations the grid has."""
        return math.prod(len(values) for _, values in self.axes)

    def trials(self) -> list[dict[str, object]]:
        """The trials: ``{"trial": "trial-01", key: value, ...}``, numbered in grid order.

        With ``samples``, the seeded random picks from the grid, kept in grid order.
        """
        if not self.samples:
            grid = list(itertools.product(*(values for _, values in self.axes)))
        else:  # the picks' grid positions, decoded: the grid itself is never built
            picks = random.Random(SAMPLE_SEED).sample(range(self.grid_size), self.samples)
            grid = [self._combination(index) for index in sorted(picks)]
        return [{"trial": trial_name(number), **dict(zip(self.keys, combination, strict=True))}
                for number, combination in enumerate(grid, start=1)]

    def _combination(self, index: int) -> tuple:
        """The grid's ``index``-th combination in :func:`itertools.product` order."""
        combination = []
        for _, values in reversed(self.axes):
            index, at = divmod(index, len(values))
            combination.append(values[at])
        return tuple(reversed(combination))

    def loop_items(self) -> list[dict[str, object]]:
        """The ParallelFor's items: each trial's train-step arguments, and ``trial``.

        A swept ``model`` (parsed by :func:`parse_axis`) goes to ``model_spec`` (a local
        ``.keras`` file or Model folder as an absolute path) with ``model_source``, the text
        of a ``file.py:function`` spec's file, read here where tbpipe compiles (as
        ``--model`` is).
        """
        items = []
        for trial in self.trials():
            item = {key if key == "trial" else train_argument(key): value
                    for key, value in trial.items()}
            if "model" in trial:
                item["model_spec"] = trial["model"].made_absolute()
                item["model_source"] = trial["model"].read_source()
            items.append(item)
        return items


def parse_axis(text: str) -> tuple[str, tuple]:
    """``learning_rate=0.003,0.001`` -> ``("learning_rate", (0.003, 0.001))``.

    Raises:
        SettingError: no ``=``, an empty value or list, or a value not of the parameter's
            kind (``--sweep batch_size='x': must be an integer``).

    """
    key, sep, listed = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise SettingError("--sweep", text, "expected KEY=V1,V2,... (e.g. learning_rate="
                           "0.003,0.001)")
    if key not in SWEEPABLE:
        raise SettingError("--sweep", key, "is not a train parameter a sweep can vary; "
                           f"use one of {', '.join(SWEEPABLE)}")
    items = [item.strip() for item in listed.split(",")] if listed.strip() else []
    if not items:
        raise SettingError(f"--sweep {key}", "", f"has no values; give one or more, e.g. "
                           f"--sweep {key}=V1,V2")
    param = param_table()[key]
    kind = param.parse or param.type  # a model: parsed once, here
    values = []
    for item in items:
        if not item:
            raise SettingError(f"--sweep {key}", listed, "has an empty value")
        try:
            values.append(kind(item))
        except InputError as exc:  # a model spec's line names --model: name --sweep
            raise SettingError(f"--sweep {key}", item, str(exc).partition(": ")[2]) from None
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise SettingError(f"--sweep {key}", item, f"must be {what}") from None
    return key, tuple(values)


def parse_sweep(texts: Sequence[str], samples: int = 0, max_parallel: int = 0) -> Sweep | None:
    """The Sweep of ``--sweep`` flags (None when there are none).

    Raises:
        SettingError: a flag is malformed, or the sweep is not one tbpipe can run.

    """
    if not texts:
        for flag, value in (("--sweep-samples", samples), ("--max-parallel", max_parallel)):
            if value:
                raise SettingError(flag, value, "needs --sweep")
        return None
    return Sweep(tuple(parse_axis(text) for text in texts), samples, max_parallel)


def parse_tune(texts: Sequence[str], *, algorithm: str = "", pruner: str = "",
               trials: int | None = None, parallel: int | None = None,
               max_failed: int | None = None, goal: str = "", timeout_s: int | None = None,
               objectives: Sequence[str] = ()) -> TuneConfig | None:
    """The search of ``--tune`` flags (None when there are none); unset ones keep the defaults.

    The search is checked here, once, as its config is built (the space by the tuning
    logic's parser: each key a train setting or ``model.NAME``, a keyword of the user's
    model function).

    Raises:
        SettingError: a flag is malformed, or the search is not one tbpipe can run; a search
            flag without ``--tune``.

    """
    given = {"algorithm": algorithm or None, "pruner": pruner or None, "trials": trials,
             "parallel": parallel, "max_failed": max_failed, "goal": goal or None,
             "timeout_s": timeout_s, "objectives": tuple(objectives) or None}
    if not texts:
        for field, value in given.items():
            if value is not None:
                raise SettingError(TUNE_FLAGS[field], value, "needs --tune KEY=SPACE")
        return None
    return TuneConfig(tuple(texts), **{k: v for k, v in given.items() if v is not None})


#: The flag of each TuneConfig field, for the lines that name them.
TUNE_FLAGS = {"space": "--tune", "algorithm": "--algorithm", "pruner": "--pruner",
              "trials": "--trials", "parallel": "--parallel",
              "max_failed": "--max-failed-trials", "goal": "--tune-goal",
              "timeout_s": "--tune-timeout", "objectives": "--objective"}
