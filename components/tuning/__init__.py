"""Hyper-parameter search (issue 25): the logic, no kfp; the pipeline drives it.

* :mod:`.space`: ``--tune KEY=SPACE`` parsed (``parse_space``, ``SearchSpace``), and a
  trial's parameters as train settings (``trial_settings``: ``model.NAME`` keys become
  ``TrainConfig.model_kwargs``).
* :mod:`.record`: ``TrialRecord``, one trial as its file holds it.
* :mod:`.study`: the study as files in a folder of the log root (``read_trials``,
  ``write_trial``, ``fail_unfinished``) and ``suggest_trials(uri, space, algorithm, n,
  seed, directions)`` through Optuna's samplers.
* :mod:`.pruning`: a trial's curve read back from its event files and Optuna's pruners
  (``TrialReporter``, ``keras_callback``), hooked into the train step by
  ``TrainConfig.tune_study`` / ``tune_trial`` / ``pruner``.
* :mod:`.objectives`: ``parse_objective(s)``, ``pareto_front``, ``best_trial`` (the stated
  selection rule), ``parse_goal`` / ``goal_met``.
* :mod:`.table`: the trial table as rows (``trial_rows``) and Markdown.

Signature changes after the first version are noted here.
"""
