"""The promote step as a KFP component: translation between artifacts and the logic only."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(
    selection: str,
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    log_root: str,
    promote_to: str,
    baseline_model: str = "",
    min_improvement: float = 0.0,
    promotion_metric: str = "accuracy",
    force_promote: bool = False,
    experiment: str = "default",
    run_name: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    tensorboard_url: str = "http://127.0.0.1:6006",
    resume: bool = False,
) -> NamedTuple("PromoteOutputs", [("decision", str), ("summary", str)]):
    """Copy the selected model to ``promote_to`` only if it beats the baseline there.

    ``selection`` is select-model's JSON summary (its ``model_uri`` is the model); the
    baseline is ``baseline_model``, else what ``promote_to`` holds. Logs go to
    {log_root}/{experiment}/{run}/promote; the run's ``_summary.json`` gets the decision.
    Defaults: PromoteConfig's (a test holds them equal). Returns ``promoted`` or
    ``kept baseline``, and the run summary as JSON.
    """
    import json
    from collections import namedtuple

    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.common.run_summary import write_run_summary
    from tbpipe.components.promotion.config import PromoteConfig
    from tbpipe.components.promotion.core import promote_model

    with step_run("promote", metrics.uri, log_root, experiment, run_name, job_name,
                  resume) as here:
        config = PromoteConfig(promotion_metric=promotion_metric,
                               min_improvement=min_improvement, force_promote=force_promote,
                               run_label=here.label)
        here.claim()
        chosen = json.loads(selection)
        decision = promote_model(chosen["model_uri"], test_data.path, promote_to,
                                 baseline_model, here.log_dir, report.path, config, log_root)
        summary = write_run_summary(log_root, experiment, here.run, chosen, tensorboard_url,
                                    decision.as_dict())
    for name, value in decision.new_scores.items():
        metrics.log_metric(f"new_{name}", value)
    for name, value in (decision.baseline_scores or {}).items():
        metrics.log_metric(f"baseline_{name}", value)
    metrics.log_metric("promoted", float(decision.promoted))
    report_result("promote", decision.line().split(" (")[0])  # verdict and both scores
    outputs = namedtuple("PromoteOutputs", ["decision", "summary"])
    return outputs(decision.verdict, json.dumps(summary, sort_keys=True))
