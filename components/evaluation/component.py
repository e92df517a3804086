"""The evaluate step as a KFP component: translation between artifacts and the logic only."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
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

    ``step_name`` is ``evaluate`` or ``evaluate-finetuned`` (the pipeline evaluates twice);
    the run is ``run_name``, else the KFP job's name. Defaults: EvaluateConfig's (a test
    holds them equal). Returns the accuracy and whether it reaches ``accuracy_target``. The run
    is claimed for this KFP job (see preprocess).
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
        result = evaluate_model(model.path, test_data.path, report.path, here.log_dir, config)
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
