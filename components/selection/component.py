"""Tiny steps that route the DAG: a sweep's best trial, whether to fine-tune, the final model."""

from kfp import dsl
from kfp.dsl import Input, Markdown, Model, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_trial(models: Input[list[Model]], trials: str, best_model: Output[Model],
                 table: Output[Markdown]) -> str:
    """Copy the best trial's model (by validation accuracy) to ``best_model``.

    ``models``: the sweep's trained models (``dsl.Collected``); ``trials``: the sweep's
    trials as JSON (``tbpipe.pipelines.sweep.Sweep.trials``). Returns the trial table as JSON
    (``{"best_trial": ..., "trials": [...]}``), also written to ``table`` as Markdown.
    """
    import json

    from tbpipe.components.common.errors import exit_on_error
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.selection.core import choose_trial, trial_table

    with exit_on_error("select-trial"):
        sweep = choose_trial([model.path for model in models], json.loads(trials),
                             best_model.path)
    markdown = trial_table(sweep)
    with open(table.path, "w", encoding="utf-8") as handle:
        handle.write(markdown + "\n")
    best = next(row for row in sweep["trials"] if row["trial"] == sweep["best_trial"])
    best_model.metadata.update({"source": "trained", "trial": sweep["best_trial"],
                                "val_accuracy": best["val_accuracy"]})
    print(markdown)
    print(f"best trial: {sweep['best_trial']} (val accuracy {best['val_accuracy']:.4f})")
    report_result("select-trial", f"best {sweep['best_trial']} of {len(sweep['trials'])} "
                                  f"(val_accuracy {best['val_accuracy']:.4f})")
    return json.dumps(sweep, sort_keys=True)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def decide_finetune(mode: str, meets_target: bool, finetune_data: str) -> str:
    """``skip``, ``same-data`` or ``other-data``: what the fine-tuning branch should do."""
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.selection.core import OTHER_DATA, SAME_DATA, SKIP, finetune_plan

    plan = finetune_plan(mode, meets_target, finetune_data)
    print(f"finetune={mode}, meets target={meets_target} -> {plan}")
    report_result("decide-finetune", {SKIP: "no fine-tuning",
                                      SAME_DATA: "fine-tune on the same data",
                                      OTHER_DATA: "fine-tune on --finetune-data"}[plan])
    return plan


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_model(trained_model: Input[Model], trained_accuracy: float, best_model: Output[Model],
                 finetuned_model: Input[Model] = None, finetuned_accuracy: float = -1.0,
                 log_root: str = "", experiment: str = "default", run_name: str = "",
                 job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                 tensorboard_url: str = "http://127.0.0.1:6006", sweep: str = "") -> str:
    """Copy the most accurate model evaluation saw to ``best_model``; return a JSON summary.

    ``sweep``: select-trial's trial table (JSON), kept in the summary as ``sweep``. With
    ``log_root``, the summary also goes to the run's ``_summary.json`` (``tbpipe runs``).
    """
    import json

    from tbpipe.components.common.errors import exit_on_error
    from tbpipe.components.common.naming import resolve_run
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_summary import write_run_summary
    from tbpipe.components.selection.core import choose_model, summary_json

    summary = choose_model(trained_model.path, trained_accuracy, best_model.path,
                           finetuned_model.path if finetuned_model else None, finetuned_accuracy)
    best_model.metadata.update({"source": summary["final_model"],
                                "accuracy": summary["final_accuracy"]})
    summary["model_uri"] = best_model.uri
    if sweep:
        summary["sweep"] = json.loads(sweep)
    if log_root:
        with exit_on_error("select-model"):
            write_run_summary(log_root, experiment, resolve_run(run_name, job_name,
                                                                best_model.uri),
                              summary, tensorboard_url)
    print(f"final model: {summary['final_model']} (test accuracy {summary['final_accuracy']:.4f})")
    report_result("select-model", f"{summary['final_model']} model "
                                  f"(test accuracy {summary['final_accuracy']:.4f})")
    return summary_json(summary)
