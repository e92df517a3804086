"""The select-model step as a KFP component: the final model, and the run's summary."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def select_model(trained_model: Input[Model], trained_accuracy: float, best_model: Output[Model],
                 finetuned_model: Input[Model] = None, finetuned_accuracy: float = -1.0,
                 log_root: str = "", experiment: str = "default", run_name: str = "",
                 job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                 tensorboard_url: str = "http://127.0.0.1:6006", sweep: str = "") -> str:
    """Copy the most accurate model evaluation saw to ``best_model``; return a JSON summary.

    With ``log_root``, the summary also goes to the run's ``_summary.json`` (``tbpipe runs``).

    Args:
        trained_model: The trained model (train's, or select-trial's in a sweep).
        trained_accuracy: Its test accuracy (evaluate's ``accuracy``).
        finetuned_model: The fine-tuned model, when the pipeline fine-tuned.
        finetuned_accuracy: Its test accuracy (evaluate-finetuned's); -1: none.
        log_root: Where the run's logs are; empty: no ``_summary.json``.
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name; KFP fills it in.
        tensorboard_url: The TensorBoard address the summary links to.
        sweep: select-trial's trial table (JSON), kept in the summary as ``sweep``; empty
            outside a sweep.

    Returns:
        best_model: The chosen model (a tbpipe Model folder, with its TensorFlow SavedModel
            in ``saved_model/1``).
        Output: The run summary as JSON: which model was chosen (``final_model``), its
            ``final_accuracy`` and ``model_uri``.
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
