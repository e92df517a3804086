"""A ``--tune`` search's rounds and its outcome: what ``suggest`` and ``select-tuned`` run.

The study lives in a folder of the run (:data:`STUDY_STEP`: ``{log_root}/{experiment}/
{run}/study``), its format and its sampling the tuning logic's
(:mod:`tbpipe.components.tuning.study`). A round (:func:`suggest_round`) first marks the
trials whose train step ended without a result as failed, then stops the search when more
than ``max_failed`` trials failed (one line, the run fails), suggests nothing once the goal
is met or the time is up, and otherwise asks the study for the round's trials. After the
last round :func:`choose_tuned` gives each failed trial its HParams session
(:func:`log_failed_trials`), checks the failures again, picks the trial that goes on
(the objectives' rule, ``tuning.objectives.best_trial``), copies its model and writes each
finished trial's place on the Pareto front into its HParams (:func:`log_pareto`). Trial ``n``
of the study (0-based) trains as ``trial-{n+1:02d}`` (:func:`trial_folder`), the folder
its logs and checkpoints go to, as a sweep's trials do. No kfp, no TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tbpipe.components.common import storage
from tbpipe.components.common.errors import TbpipeError
from tbpipe.components.common.naming import trial_name
from tbpipe.components.selection.config import TuneConfig

if TYPE_CHECKING:
    from tbpipe.components.tuning.record import TrialRecord

#: The study's folder under the run's folder, named as a step's (``RunPlace.log_dir``).
STUDY_STEP = "study"
#: The file holding when the search started (for ``--tune-timeout``), in the study folder.
STARTED_FILE = "search-started.json"
#: The error recorded for a trial whose train step ended without writing its result.
NO_RESULT = ("its train step ended without a result (killed, out of memory or preempted); "
             "see that step's log")


class TooManyFailedTrials(TbpipeError):
    """More trials failed than ``--max-failed-trials`` allows."""


def trial_folder(number: int) -> str:
    """The folder (``trial-NN``) of the study's trial ``number`` (0-based)."""
    return trial_name(number + 1)


def check_failures(records: Sequence[TrialRecord], max_failed: int) -> None:
    """TooManyFailedTrials (one line, the first failures' errors) past the budget."""
    failed = [record for record in records if record.state == "failed"]
    if len(failed) <= max_failed:
        return
    shown = "; ".join(f"{trial_folder(r.number)}: {r.error or 'no error recorded'}"
                      for r in failed[:3])
    raise TooManyFailedTrials(
        f"{len(failed)} failed trial(s), more than --max-failed-trials {max_failed} allows "
        f"({shown}); fix the cause or allow more failures")


def search_elapsed(study_uri: str, now: float | None = None) -> float:
    """Seconds since the search's first round (which records its start; 0 then)."""
    now = time.time() if now is None else now
    path = storage.join(study_uri, STARTED_FILE)
    if not storage.exists(path):
        storage.create_bytes(path, json.dumps({"started": now}).encode())
        return 0.0
    return max(0.0, now - float(json.loads(storage.read_bytes(path))["started"]))


def suggest_round(study_uri: str, config: TuneConfig, count: int, seed: int,
                  now: float | None = None) -> list[dict[str, Any]]:
    """The next round's trials as train settings, one dict per trial (none: the search stops).

    Args:
        study_uri: The study folder.
        config: The search.
        count: Trials to ask (the round's size).
        seed: The run's seed (the sampler's is derived from it and the trials so far).
        now: The time (seconds since the epoch; default: now), for ``--tune-timeout``.

    Returns:
        Per trial: ``trial`` (its folder), ``tune_study`` (``study_uri``), ``tune_trial``
        (its number in the study) and its settings
        as train arguments (``tuning.space.trial_settings``: ``model.NAME`` keys become
        ``model_kwargs``). Empty when the goal is met or the time is up.

    Raises:
        TooManyFailedTrials: more than ``config.max_failed`` trials failed so far.

    """
    from tbpipe.components.tuning.objectives import goal_met, parse_objectives
    from tbpipe.components.tuning.space import SearchSpace, trial_settings
    from tbpipe.components.tuning.study import (
        fail_unfinished,
        read_trials,
        set_deadline,
        suggest_trials,
    )

    elapsed = search_elapsed(study_uri, now)
    if config.timeout_s:  # the running trials stop there too (their epochs' ends)
        set_deadline(study_uri, (time.time() if now is None else now) - elapsed
                     + config.timeout_s)
    fail_unfinished(study_uri, NO_RESULT)
    records = read_trials(study_uri)
    check_failures(records, config.max_failed)
    if config.goal and goal_met(records, config.goal):
        return []
    if config.timeout_s and elapsed >= config.timeout_s:
        return []
    space = SearchSpace.parse(config.space)
    new = suggest_trials(study_uri, space, config.algorithm, count, seed,
                         parse_objectives(config.objectives))
    return [{"trial": trial_folder(record.number), "tune_study": study_uri,
             "tune_trial": record.number, **trial_settings(record.params)} for record in new]


def stop_reason(records: Sequence[TrialRecord], config: TuneConfig) -> str:
    """Why the search ran fewer trials than ``config.trials`` (empty if it did not)."""
    from tbpipe.components.tuning.objectives import goal_met

    if len(records) >= config.trials:
        return ""
    if config.goal and goal_met(records, config.goal):
        return f"goal {config.goal} met"
    if config.timeout_s:
        return f"--tune-timeout {config.timeout_s}s reached"
    return "the search space was used up"


def log_failed_trials(records: Sequence[TrialRecord]) -> list[str]:
    """An HParams session, state ``failed``, for each failed trial; their log folders.

    A failed trial ends before its train step logs its HParams (those log after the fit),
    so TensorBoard's HParams table would not list it: this writes its parameters, ``trial``,
    ``tune_trial`` and ``tune_state`` into its own folder (``TrialRecord.log_dir``), with
    one metric, ``hparam/pareto`` 0 (off the front). Trials without a log folder (their
    step ended before it opened) are left.
    """
    from tbpipe.components.common.tensorboard.writer import log_hparams, open_writer
    from tbpipe.components.tuning.objectives import PARETO_METRIC

    written = []
    for record in records:
        if record.state != "failed" or not record.log_dir:
            continue
        hparams = {**record.params, "trial": trial_folder(record.number),
                   "tune_trial": record.number, "tune_state": "failed"}
        with open_writer(record.log_dir) as writer:
            log_hparams(writer, hparams, {PARETO_METRIC: 0.0})
        written.append(record.log_dir)
    return written


def log_pareto(records: Sequence[TrialRecord], front: set[int]) -> list[str]:
    """Each finished trial's ``hparam/pareto`` in its folder: 1 if its number is in ``front``.

    The trial's train step declared the metric (NaN) with its HParams; this writes the value
    at that same step (the last one there), so TensorBoard's HParams table shows the last
    value and purges nothing. Returns the folders written.
    """
    from tbpipe.components.common.tensorboard.writer import open_writer
    from tbpipe.components.tuning.objectives import PARETO_METRIC
    from tbpipe.components.tuning.pruning import read_points
    from tbpipe.components.tuning.record import FINISHED

    written = []
    for record in records:
        if record.state not in FINISHED or not record.log_dir:
            continue
        steps = read_points(record.log_dir, PARETO_METRIC)
        with open_writer(record.log_dir) as writer:
            writer.add_scalar(PARETO_METRIC, float(record.number in front),
                              max(steps, default=0))
        written.append(record.log_dir)
    return written


def choose_tuned(study_uri: str, config: TuneConfig, best_uri: str,
                 run_settings: dict[str, Any]) -> dict[str, Any]:
    """Copy the best trial's model to ``best_uri``; the search's outcome.

    Each failed trial gets its HParams session (:func:`log_failed_trials`) and each finished
    one its place on the Pareto front (:func:`log_pareto`).

    Args:
        study_uri: The study folder.
        config: The search.
        best_uri: Where the best trial's Model folder goes (copied whole, atomically).
        run_settings: The run's own ``batch_size``, ``seed`` and ``precision``: the best
            trial's values replace those it tuned (what finetune trains with).

    Returns:
        ``{"best_trial", "trials": rows, "objectives", "best_params", "settings",
        "stopped"}``: the rows of ``tuning.table.trial_rows`` with ``trial`` the trial's
        folder name; ``objectives`` their names; ``settings`` the run's settings with the
        best trial's.

    Raises:
        TooManyFailedTrials: more than ``config.max_failed`` trials failed.
        NoFinishedTrial: no trial finished with its objectives measured.

    """
    from tbpipe.components.common.model_format import read_model_meta
    from tbpipe.components.tuning.objectives import best_trial, parse_objectives
    from tbpipe.components.tuning.space import trial_settings
    from tbpipe.components.tuning.study import fail_unfinished, read_trials
    from tbpipe.components.tuning.table import trial_rows

    fail_unfinished(study_uri, NO_RESULT)
    records = read_trials(study_uri)
    log_failed_trials(records)
    check_failures(records, config.max_failed)
    objectives = parse_objectives(config.objectives)
    best = best_trial(records, objectives)
    with storage.local_input(best.model_uri) as source, storage.atomic_dir(best_uri) as tmp:
        read_model_meta(source)  # InputError (one line) if it holds no model
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    table = trial_rows(records, objectives)
    log_pareto(records, {row["trial"] for row in table if row["pareto"]})
    rows = [{**row, "trial": trial_folder(row["trial"])} for row in table]
    settings = {**run_settings, **{key: value for key, value in
                                   trial_settings(best.params).items() if key in run_settings}}
    return {"best_trial": trial_folder(best.number), "trials": rows,
            "objectives": [o.name for o in objectives], "best_params": dict(best.params),
            "settings": settings, "stopped": stop_reason(records, config)}
