"""Tiny steps that route the DAG: decide whether to fine-tune; pick the final model."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from tbpipe.components._image import IMAGE


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
                 finetuned_model: Input[Model] = None, finetuned_accuracy: float = -1.0) -> str:
    """Copy the most accurate model evaluation saw to ``best_model``; return a JSON summary."""
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.selection.core import choose_model, summary_json

    summary = choose_model(trained_model.path, trained_accuracy, best_model.path,
                           finetuned_model.path if finetuned_model else None, finetuned_accuracy)
    best_model.metadata.update({"source": summary["final_model"],
                                "accuracy": summary["final_accuracy"]})
    summary["model_uri"] = best_model.uri
    print(f"final model: {summary['final_model']} (test accuracy {summary['final_accuracy']:.4f})")
    report_result("select-model", f"{summary['final_model']} model "
                                  f"(test accuracy {summary['final_accuracy']:.4f})")
    return summary_json(summary)
