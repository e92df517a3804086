"""The select-tuned step as a KFP component: a ``--tune`` search's best trial and its table."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown, Metrics, Model, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_tuned(tune: str, log_root: str, best_model: Output[Model], table: Output[Markdown],
                 best_params: Output[Metrics], experiment: str = "default",
                 run_name: str = "", job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                 resume: bool = False, batch_size: int = 32, seed: int = 42,
                 precision: str = "auto") -> NamedTuple("Outputs", trials=str, batch_size=int,
                                                        seed=int, precision=str):
    """Copy the search's best trial's model to ``best_model`` (the objectives' rule).

    Fails with one line when more trials failed than the search allows, or none finished.

    Args:
        tune: The search as JSON (``tbpipe.components.selection.config.TuneConfig``).
        log_root: Where every step's logs go; the study is under the run's folder there.
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        resume: Continue a run of this name that another KFP job claimed.
        batch_size: The run's batch size (the best trial's, where it was tuned, goes on).
        seed: The run's seed (likewise).
        precision: The run's precision (likewise).

    Returns:
        best_model: The best trial's model (a tbpipe Model folder).
        table: The trial table as Markdown: state (complete, pruned, failed), objectives,
            parameters, epochs run, Pareto front, error.
        best_params: The best trial's numeric parameters and objective values.
        trials: The search's outcome as JSON: ``best_trial``, ``trials`` (the rows),
            ``best_params``, ``settings``, ``stopped``.
        batch_size: The batch size finetune trains with: the best trial's, else the run's.
        seed: The seed finetune trains with.
        precision: The precision finetune trains with.
    """
    import json
    from collections import namedtuple

    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.selection.config import TuneConfig
    from tbpipe.components.selection.tuned import STUDY_STEP, choose_tuned
    from tbpipe.components.tuning.table import markdown_trial_table

    with step_run("select-tuned", best_model.uri, log_root, experiment, run_name, job_name,
                  resume) as here:
        config = TuneConfig.from_json(tune)
        outcome = choose_tuned(here.place.log_dir(here.run, STUDY_STEP), config, best_model.path,
                               {"batch_size": batch_size, "seed": seed,
                                "precision": precision})
    markdown = markdown_trial_table(outcome["trials"])
    with open(table.path, "w", encoding="utf-8") as handle:
        handle.write(markdown + "\n")
    best = next(row for row in outcome["trials"] if row["trial"] == outcome["best_trial"])
    for name, value in {**outcome["best_params"],
                        **{k: best[k] for k in outcome["objectives"]}}.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            best_params.log_metric(name, value)
    best_params.metadata.update({"trial": outcome["best_trial"],
                                 "params": json.dumps(outcome["best_params"], sort_keys=True)})
    best_model.metadata.update({"source": "trained", "trial": outcome["best_trial"]})
    states = [row["state"] for row in outcome["trials"]]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    print(markdown)
    print(f"best trial: {outcome['best_trial']} of {len(states)} ({counts})")
    report_result("select-tuned", f"best {outcome['best_trial']} of {len(states)} ({counts})")
    settings = outcome["settings"]
    return namedtuple("Outputs", "trials batch_size seed precision")(
        json.dumps(outcome, sort_keys=True), int(settings["batch_size"]), int(settings["seed"]),
        str(settings["precision"]))
