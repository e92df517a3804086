"""The evaluate step as a KFP component: translation between artifacts and the logic only."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    HTML,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
    html_report: Output[HTML],
    log_root: str,
    experiment: str = "default",
    run_name: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    accuracy_target: float = 0.95,
    step_name: str = "evaluate",
    tensorboard_url: str = "http://127.0.0.1:6006",
    resume: bool = False,
) -> NamedTuple("EvaluateOutputs", [("accuracy", float), ("meets_target", bool)]):
    """Evaluate a model on the test set; logs go to {log_root}/{experiment}/{run}/{step_name}.

    The run is claimed for this KFP job (see preprocess). Defaults: EvaluateConfig's (a test
    holds them equal).

    Args:
        model: The model to score (train's or finetune's).
        test_data: The test examples (preprocess's ``test_data``).
        log_root: Where every step's TensorBoard logs go; this step's are
            ``{log_root}/{experiment}/{run}/{step_name}``.
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        accuracy_target: The test accuracy the model should reach (``meets_target``).
        step_name: ``evaluate`` or ``evaluate-finetuned`` (the pipeline evaluates twice):
            the step's log folder.
        tensorboard_url: The TensorBoard address the report links to.
        resume: Continue a run of this name that another KFP job claimed.

    Returns:
        metrics: Test loss, accuracy, macro precision, recall and F1, whether the target
            is met (0/1) and the number of examples.
        classification_metrics: The confusion matrix (the KFP UI draws it).
        report: A Markdown report: the scores, the confusion matrix and the TensorBoard link.
        html_report: An HTML report (one self-contained page): per-class precision, recall
            and F1, the most confused class pairs, and thumbnails of the misclassified test
            images (at most 64, the model's surest mistakes) with true and predicted classes.
        accuracy: The test accuracy, from 0 to 1.
        meets_target: Whether ``accuracy`` reaches ``accuracy_target``.
    """
    from collections import namedtuple

    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.evaluation.config import EvaluateConfig
    from tbpipe.components.evaluation.core import evaluate_model

    with step_run(step_name, metrics.uri, log_root, experiment, run_name, job_name,
                  resume) as here:
        config = EvaluateConfig(accuracy_target=accuracy_target, tensorboard_url=tensorboard_url,
                                run_label=here.label)
        here.claim()
        result = evaluate_model(model.path, test_data.path, report.path, here.log_dir, config,
                                html_report_uri=html_report.path)
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    classification_metrics.log_confusion_matrix(
        categories=list(result.names),
        matrix=result.confusion_matrix)
    target = "met" if result.meets_target else "not met"
    report_result(step_name, f"test accuracy {result.accuracy:.4f} "
                             f"(target {accuracy_target:g} {target})")
    outputs = namedtuple("EvaluateOutputs", ["accuracy", "meets_target"])
    return outputs(result.accuracy, result.meets_target)
