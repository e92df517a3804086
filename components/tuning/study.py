"""A study's state as files in a folder of the log root, and new trials suggested from them.

The folder (``{log_root}/{experiment}/{run}/study``, any store of
:mod:`tbpipe.components.common.storage`) holds:

* ``study.json``: what the search is (space, algorithm, seed, objectives), created once by
  the first :func:`suggest_trials` and compared by every later one;
* ``trial-NNNNN.json``: one :class:`TrialRecord` per trial, written whole (atomically
  locally, one upload on a store) and only by that trial's own step once suggested, so the
  trials of a round that finish at the same time never rewrite a shared file.

:func:`suggest_trials` rebuilds an in-memory Optuna study from the records
(``optuna.trial.create_trial`` + ``study.add_trial``) and asks it for new trials with the
named sampler, seeded from ``seed`` and the number of trials so far: the same flags and the
same results give the same trials. Optuna is imported inside the functions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tbpipe.components.common import storage
from tbpipe.components.common.errors import SettingError, StorageError
from tbpipe.components.tuning.objectives import DEFAULT_OBJECTIVES, Objective
from tbpipe.components.tuning.record import TrialRecord
from tbpipe.components.tuning.space import SearchSpace

#: Optuna's samplers by the name ``--algorithm`` takes.
ALGORITHMS = ("random", "grid", "tpe", "cmaes", "qmc", "nsgaii")
#: TPE's random start: trials sampled at random before its model of the results takes over.
TPE_STARTUP_TRIALS = 5
STUDY_FILE = "study.json"
DEADLINE_FILE = "deadline.json"
_TRIAL_FILE = re.compile(r"trial-(\d{5,})\.json")


def trial_uri(uri: str, number: int) -> str:
    """The file of trial ``number`` in the study folder ``uri``."""
    return storage.join(uri, f"trial-{number:05d}.json")


def read_trials(uri: str) -> list[TrialRecord]:
    """The study's trials, by number; none when the folder does not exist yet.

    Raises:
        StorageError: a trial file cannot be read or is not a trial record (one line naming it).

    """
    records = []
    for name in storage.list_files(uri) if storage.exists(uri) else []:
        if not _TRIAL_FILE.fullmatch(name):
            continue
        path = storage.join(uri, name)
        try:
            records.append(TrialRecord.from_json(storage.read_bytes(path)))
        except (ValueError, TypeError) as exc:
            raise StorageError(f"{path}: not a trial record ({exc}); remove it or start "
                               "another run") from exc
    return sorted(records, key=lambda record: record.number)


def read_trial(uri: str, number: int) -> TrialRecord:
    """Trial ``number``'s record."""
    path = trial_uri(uri, number)
    try:
        return TrialRecord.from_json(storage.read_bytes(path))
    except (ValueError, TypeError) as exc:
        raise StorageError(f"{path}: not a trial record ({exc}); remove it or start "
                           "another run") from exc


def write_trial(uri: str, record: TrialRecord) -> None:
    """Write ``record`` whole to its own file in the study folder (replacing it)."""
    storage.write_bytes(trial_uri(uri, record.number), record.to_json().encode())


def fail_unfinished(uri: str, error: str) -> list[TrialRecord]:
    """Mark every ``running`` trial failed with ``error``; the records changed.

    For trials whose step ended without a result (killed, out of memory): called by the
    step that collects a round, before the next round is suggested.
    """
    changed = []
    for record in read_trials(uri):
        if record.state == "running":
            record = record.replace(state="failed", error=error)
            write_trial(uri, record)
            changed.append(record)
    return changed


def set_deadline(uri: str, deadline: float) -> None:
    """Record when the search must end (``--tune-timeout``): the first round's, kept.

    Every running trial stops at its next epoch's end once it passes (``TrialReporter``),
    so the whole search, not only its suggestions, ends near the deadline.
    """
    path = storage.join(uri, DEADLINE_FILE)
    if not storage.exists(path):
        storage.create_bytes(path, json.dumps({"deadline": float(deadline)}).encode())


def read_deadline(uri: str) -> float | None:
    """When the search must end (:func:`set_deadline`); None: no ``--tune-timeout``."""
    path = storage.join(uri, DEADLINE_FILE)
    if not storage.exists(path):
        return None
    return float(json.loads(storage.read_bytes(path))["deadline"])


def read_study(uri: str) -> dict[str, Any] | None:
    """``study.json``'s content, None before the first :func:`suggest_trials`."""
    path = storage.join(uri, STUDY_FILE)
    if not storage.exists(path):
        return None
    return json.loads(storage.read_bytes(path))


def study_objectives(uri: str) -> tuple[Objective, ...]:
    """The objectives ``study.json`` names (the default before the study exists)."""
    from tbpipe.components.tuning.objectives import parse_objective

    study = read_study(uri)
    if not study:
        return DEFAULT_OBJECTIVES
    return tuple(parse_objective(text) for text in study["objectives"])


def suggest_trials(uri: str, space: SearchSpace, algorithm: str, n: int, seed: int,
                   directions: Sequence[Objective] = DEFAULT_OBJECTIVES) -> list[TrialRecord]:
    """Ask ``n`` new trials of the study in folder ``uri`` and record them as ``running``.

    Rebuilds an Optuna study from the records (complete ones with their values, pruned ones
    with their curves, failed and running ones with their parameters), then asks it with
    the sampler ``algorithm`` seeded from ``seed`` and the number of trials so far. A grid
    asks each grid point once: fewer than ``n`` trials (none) once the grid is used up.

    Args:
        uri: The study folder (local, ``gs://``, ``s3://``, ``az://``...).
        space: What is searched.
        algorithm: One of :data:`ALGORITHMS`.
        n: How many trials to ask (a round: ``--parallel``).
        seed: Seeds the sampler.
        directions: The objectives, in order (the first is the one pruning watches).

    Returns:
        The new trials' records (numbers following the study's), already written.

    Raises:
        SettingError: an unknown algorithm, one that cannot serve these objectives, or a
            study folder holding a search with other settings.

    """
    objectives = tuple(directions)
    _check_algorithm(algorithm, objectives)
    if n < 0:
        raise SettingError("--parallel", n, "must be 0 or more")
    _claim_study(uri, space, algorithm, seed, objectives)
    records = read_trials(uri)
    # A grid's order is its seed's shuffle, fixed for the whole search; the other samplers
    # get a seed per round (the same seed each round would repeat a random sampler's trials).
    sampler_seed = seed if algorithm == "grid" else round_seed(seed, len(records))
    study = rebuild_study(records, space, objectives,
                          sampler=make_sampler(algorithm, space, sampler_seed))
    if algorithm == "grid":
        n = min(n, _grid_left(records, space))
    first = records[-1].number + 1 if records else 0
    new = []
    for offset in range(n):
        trial = study.ask()
        params = space.suggest(trial)
        asked = study.get_trials(deepcopy=False)[-1]  # what the sampler noted (grid point...)
        record = TrialRecord(number=first + offset, params=params,
                             system_attrs=_json_safe(asked.system_attrs))
        storage.create_bytes(trial_uri(uri, record.number), record.to_json().encode())
        new.append(record)
    return new


def round_seed(seed: int, trials_so_far: int) -> int:
    """The sampler's seed for a round: a function of the run's seed and the history's length."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), int(trials_so_far)]).generate_state(1)[0])


def make_sampler(algorithm: str, space: SearchSpace, seed: int) -> Any:  # noqa: ANN401
    """Optuna's sampler named ``algorithm``, seeded."""
    import optuna

    _quiet_optuna()
    samplers = optuna.samplers
    if algorithm == "random":
        return samplers.RandomSampler(seed=seed)
    if algorithm == "grid":
        return samplers.GridSampler(space.grid(), seed=seed)
    if algorithm == "tpe":
        return samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS,
                                   multivariate=True, constant_liar=True)
    if algorithm == "cmaes":
        return samplers.CmaEsSampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS,
                                     warn_independent_sampling=False)
    if algorithm == "qmc":
        return samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if algorithm == "nsgaii":
        return samplers.NSGAIISampler(seed=seed)
    raise SettingError("--algorithm", algorithm, f"must be one of {', '.join(ALGORITHMS)}")


def rebuild_study(records: Sequence[TrialRecord], space: SearchSpace,
                  objectives: Sequence[Objective], sampler: Any = None,  # noqa: ANN401
                  pruner: Any = None) -> Any:  # noqa: ANN401
    """An in-memory ``optuna.Study`` holding ``records`` (a record outside ``space`` is skipped).

    A complete trial lacking an objective's value enters as failed.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    _quiet_optuna()
    study = optuna.create_study(
        study_name="tbpipe", sampler=sampler, pruner=pruner,
        directions=[objective.direction for objective in objectives])
    distributions = space.distributions()
    for record in records:
        if not space.contains(record.params):
            continue
        values = [record.values.get(objective.name) for objective in objectives]
        state = {"running": TrialState.RUNNING, "complete": TrialState.COMPLETE,
                 "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}[record.state]
        if state == TrialState.COMPLETE and any(value is None for value in values):
            state = TrialState.FAIL
        study.add_trial(create_trial(
            state=state, params=dict(record.params), distributions=distributions,
            values=values if state == TrialState.COMPLETE else None,
            intermediate_values=dict(record.intermediate),
            system_attrs=dict(record.system_attrs),
            user_attrs={"tbpipe_number": record.number}))
    return study


def _check_algorithm(algorithm: str, objectives: Sequence[Objective]) -> None:
    if algorithm not in ALGORITHMS:
        raise SettingError("--algorithm", algorithm, f"must be one of {', '.join(ALGORITHMS)}")
    if not objectives:
        raise SettingError("--objective", "", "give at least one objective")
    if algorithm == "cmaes" and len(objectives) > 1:
        raise SettingError("--algorithm", algorithm, "searches one objective only; use tpe, "
                           "nsgaii or random with several --objective")


def _claim_study(uri: str, space: SearchSpace, algorithm: str, seed: int,
                 objectives: Sequence[Objective]) -> None:
    """Create ``study.json``, or check that the one there describes the same search."""
    want = {"space": list(space.texts), "algorithm": algorithm, "seed": int(seed),
            "objectives": [objective.text for objective in objectives]}
    have = read_study(uri)
    if have is None:
        storage.create_bytes(storage.join(uri, STUDY_FILE),
                             json.dumps(want, indent=1, sort_keys=True).encode())
        have = read_study(uri)
    if have != want:
        differ = sorted(key for key in want if have.get(key) != want[key])
        raise SettingError("--tune", ", ".join(space.texts),
                           f"the study in {uri} was started with other {', '.join(differ)}; "
                           "give the same search settings or another run name")


def _grid_left(records: Sequence[TrialRecord], space: SearchSpace) -> int:
    """Grid points no trial has taken yet."""
    taken = {tuple(sorted(record.params.items())) for record in records
             if space.contains(record.params)}
    return max(space.grid_size() - len(taken), 0)


def _json_safe(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes that JSON keeps as they are (the others a sampler can do without)."""
    kept = {}
    for key, value in attrs.items():
        try:
            if json.loads(json.dumps(value)) == value:
                kept[key] = value
        except (TypeError, ValueError):
            continue
    return kept


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
