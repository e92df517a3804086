"""The select-trial step as a KFP component: a sweep's best trial, by validation accuracy."""

from kfp import dsl
from kfp.dsl import Input, Markdown, Model, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_trial(models: Input[list[Model]], trials: str, best_model: Output[Model],
                 table: Output[Markdown]) -> str:
    """Copy the best trial's model (by validation accuracy) to ``best_model``.

    Args:
        models: The sweep's trained models (``dsl.Collected`` of the loop's train steps).
        trials: The sweep's trials as JSON (``tbpipe.pipelines.sweep.Sweep.trials``).

    Returns:
        best_model: The best trial's model (a tbpipe Model folder).
        table: The trial table as Markdown: each trial's values and validation accuracy.
        Output: The trial table as JSON: ``{"best_trial": ..., "trials": [...]}``.
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
