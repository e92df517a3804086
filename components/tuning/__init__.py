"""Hyper-parameter search (issue 25): the logic, no kfp; the pipeline drives it.

Signature changes after the first version (commit "tuning: search spaces, ..."): none.
Behaviour changes: the median pruner prunes from half a trial's epochs (at least epoch 2);
a failed trial no longer fails its train step (the failure budget decides); a trial's
HParams carry ``hparam/pareto``.

* :mod:`.space`: ``--tune KEY=SPACE`` parsed (``parse_space``, ``SearchSpace.parse``), and a
  trial's parameters as train settings (``trial_settings``: ``model.NAME`` keys become
  ``TrainConfig.model_kwargs``, a JSON object).
* :mod:`.record`: ``TrialRecord``, one trial as its file holds it.
* :mod:`.study`: the study as files in a folder of the log root (``read_trials``,
  ``write_trial``, ``fail_unfinished``) and ``suggest_trials(uri, space, algorithm, n,
  seed, directions)`` through Optuna's samplers (``ALGORITHMS``).
* :mod:`.pruning`: a trial's curve read back from its event files and Optuna's pruners
  (``TrialReporter``, ``keras_callback``), hooked into the train step by
  ``TrainConfig.tune_study`` / ``tune_trial`` / ``pruner`` (``PRUNERS`` in
  :mod:`tbpipe.components.training.config`).
* :mod:`.objectives`: ``parse_objective(s)``, ``pareto_front``, ``best_trial`` (the stated
  selection rule), ``parse_goal`` / ``goal_met``, ``PARETO_METRIC``.
* :mod:`.table`: the trial table as rows (``trial_rows``) and Markdown.

A search, as the pipeline runs it: the study folder is
``{log_root}/{experiment}/{run}/study`` (any store); each round, ``suggest_trials`` records
``--parallel`` new trials as ``running`` and returns them; each trial's train step gets
``trial_settings(record.params)`` plus ``tune_study``, ``tune_trial=record.number`` and
``pruner``, and its own log folder; it writes its curve after every epoch and ends
``complete``, ``pruned`` (model saved) or ``failed`` (error line recorded; the train step
then ends without failing, so the round goes on: the search fails only when more than
``--max-failed-trials`` trials have failed, in the next ``suggest`` or in select-tuned).
Between rounds: ``fail_unfinished`` (steps that ended without a result), then
``read_trials``, the failure budget, ``goal_met``; at the end ``best_trial``,
``trial_rows`` and each finished trial's ``hparam/pareto`` (``PARETO_METRIC``) in its
HParams.
"""
