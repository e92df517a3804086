"""The suggest step as a KFP component: a ``--tune`` round's trials, from the study so far."""

from kfp import dsl

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def suggest(tune: str, count: int, log_root: str, experiment: str = "default",
            run_name: str = "", job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            seed: int = 42, resume: bool = False) -> list:
    """Suggest a round's trials from every result so far (none once the search stops).

    The study is ``{log_root}/{experiment}/{run}/study``. Trials whose train step ended
    without a result are marked failed first; more failed trials than the search allows
    fail this step with one line.

    Args:
        tune: The search as JSON (``tbpipe.components.selection.config.TuneConfig``).
        count: Trials to suggest (the round's size: ``--parallel``, the last round less).
        log_root: Where every step's logs go; the study is under the run's folder there.
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        seed: The run's seed; the sampler's comes from it and the trials so far.
        resume: Continue a run of this name that another KFP job claimed.

    Returns:
        Output: The round's trials, each the train step's settings: ``trial``
            (``trial-NN``), ``tune_study`` (the study folder), ``tune_trial`` and the tuned
            settings; empty when the goal is met, the time is up or the space is used up.
    """
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.selection.config import TuneConfig
    from tbpipe.components.selection.tuned import STUDY_STEP, suggest_round

    with step_run("suggest", "", log_root, experiment, run_name, job_name, resume) as here:
        config = TuneConfig.from_json(tune)
        here.claim()
        trials = suggest_round(here.place.log_dir(here.run, STUDY_STEP), config, count, seed)
    names = ", ".join(trial["trial"] for trial in trials) or "none (the search stopped)"
    print(f"suggested: {names}")
    report_result("suggest", names)
    return trials
