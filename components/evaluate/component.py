"""The evaluate step as a KFP component: translation between artifacts and the logic only."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
    log_root: str,
    experiment: str,
    run_name: str,
    job_name: str,
    accuracy_target: float = 0.95,
    step_name: str = "evaluate",
    tensorboard_url: str = "http://127.0.0.1:6006",
) -> NamedTuple("EvaluateOutputs", [("accuracy", float), ("meets_target", bool)]):
    """Evaluate a model on the test set; logs go to {log_root}/{experiment}/{run}/{step_name}.

    ``step_name`` is ``evaluate`` or ``evaluate-finetuned`` (the pipeline evaluates twice).
    Returns the accuracy and whether it reaches ``accuracy_target``.
    """
    from collections import namedtuple

    from components.common.errors import exit_on_error
    from components.common.naming import resolve_run, step_log_dir
    from components.evaluate.core import EvaluateConfig, evaluate_model

    with exit_on_error(step_name):
        run = resolve_run(run_name, job_name)
        log_dir = step_log_dir(log_root, experiment, run, step_name)
        config = EvaluateConfig(accuracy_target=accuracy_target, tensorboard_url=tensorboard_url,
                                run_label=f"{experiment}/{run}")
        result = evaluate_model(model.path, test_data.path, report.path, log_dir, config)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    classification_metrics.log_confusion_matrix(
        categories=[str(k) for k in range(len(result.confusion_matrix))],
        matrix=result.confusion_matrix)
    outputs = namedtuple("EvaluateOutputs", ["accuracy", "meets_target"])
    return outputs(result.accuracy, result.meets_target)
