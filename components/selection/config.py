"""What the routing steps take: the fine-tuning mode, a search's settings (no numpy, no kfp)."""

from __future__ import annotations

import dataclasses
import json

from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.common.params import Param, ParamGroup

#: ``--finetune``: ``auto`` fine-tunes when evaluation misses the accuracy target or
#: check-data found the data drifted from the champion's.
FINETUNE_MODES = ("auto", "always", "never")

PARAMS = ParamGroup("decide-finetune", (
    Param("finetune", "whether to fine-tune: auto (when the accuracy target is missed or "
                      "the data drifted from the champion's), always or never", type=str,
          default=FINETUNE_MODES[0],
          choices=FINETUNE_MODES),
))


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A ``--tune`` search: its space, how it searches, and when it stops.

    Built once where the flags enter (``tbpipe.pipelines.sweep.parse_tune``), compiled into
    the pipeline as JSON (:meth:`to_json`), rebuilt (and so checked again) by the steps that
    read it (suggest, select-tuned). The space, algorithm, pruner, objectives and goal are
    checked by the tuning logic's own parsers (``tbpipe.components.tuning``).

    Attributes:
        space: The ``--tune KEY=SPACE`` texts, in the order given.
        algorithm: The sampler (``--algorithm``).
        pruner: The early stopping rule (``--pruner``).
        trials: How many trials the search runs at most (``--trials``).
        parallel: Trials a round trains at once on a cluster (``--parallel``); the search is
            ``ceil(trials / parallel)`` rounds, each suggested from every result before it.
        max_failed: Failed trials the search goes on after (``--max-failed-trials``); one more
            fails the run.
        goal: Stop suggesting once a finished trial meets it (``--tune-goal``,
            ``val_accuracy>=0.99``); empty: no goal.
        timeout_s: Suggest no trial once the search has run this long, and stop the running
            ones at their epoch's end (``--tune-timeout``, seconds); 0: no bound.
        objectives: ``NAME:max|min`` (``--objective``), the first one leading; empty: the
            tuning logic's default (validation accuracy, maximized).

    """

    space: tuple[str, ...]
    algorithm: str = "tpe"
    pruner: str = "median"
    trials: int = 10
    parallel: int = 1
    max_failed: int = 0
    goal: str = ""
    timeout_s: int = 0
    objectives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """SettingError (one line naming the flag) for a search tbpipe cannot run."""
        from tbpipe.components.common.limits import MAX_SWEEP_TRIALS
        from tbpipe.components.training.config import PRUNERS
        from tbpipe.components.tuning.objectives import parse_goal, parse_objectives
        from tbpipe.components.tuning.space import SearchSpace
        from tbpipe.components.tuning.study import ALGORITHMS

        if isinstance(self.space, str) or isinstance(self.objectives, str):
            raise SettingError("--tune", self.space, "give the KEY=SPACE texts as a list")
        object.__setattr__(self, "space", tuple(self.space))
        if not self.space:
            raise SettingError("--tune", "", "give at least one KEY=SPACE, e.g. "
                               "learning_rate=1e-4..1e-1:log")
        SearchSpace.parse(self.space)
        object.__setattr__(self, "objectives", tuple(
            objective.text for objective in parse_objectives(tuple(self.objectives))))
        for flag, value, low in (("--trials", self.trials, 1), ("--parallel", self.parallel, 1),
                                 ("--max-failed-trials", self.max_failed, 0),
                                 ("--tune-timeout", self.timeout_s, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SettingError(flag, value, "must be a positive integer" if low else
                                   "must be 0 or a positive integer")
        if self.trials > MAX_SWEEP_TRIALS:
            raise SettingError("--trials", self.trials,
                               f"more than {MAX_SWEEP_TRIALS} trials; ask for fewer")
        if self.parallel > self.trials:
            raise SettingError("--parallel", self.parallel,
                               f"must be at most --trials ({self.trials})")
        for flag, value, known in (("--algorithm", self.algorithm, ALGORITHMS),
                                   ("--pruner", self.pruner, PRUNERS)):
            if value not in known:
                raise SettingError(flag, value, f"must be one of {', '.join(known)}")
        if self.goal:
            parse_goal(self.goal)

    @property
    def keys(self) -> tuple[str, ...]:
        """The tuned keys (``learning_rate``, ``model.filters``), in the order given."""
        from tbpipe.components.tuning.space import SearchSpace

        return SearchSpace.parse(self.space).keys

    def rounds(self) -> tuple[int, ...]:
        """The trials of each round: ``parallel`` a round, the last one the rest."""
        return tuple(min(self.parallel, self.trials - first)
                     for first in range(0, self.trials, self.parallel))

    def to_json(self) -> str:
        """The config as the JSON the steps take (their ``tune`` argument)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TuneConfig:
        """The config of :meth:`to_json`'s text; InputError (one line) for anything else."""
        try:
            values = json.loads(text)
            return cls(**values)
        except (ValueError, TypeError) as exc:
            raise InputError(f"tune={text[:80]!r}: not a tbpipe search ({exc}); compile the "
                             "pipeline with tbpipe's --tune flags") from None
