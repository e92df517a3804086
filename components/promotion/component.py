"""The promote step as a KFP component: translation between artifacts and the logic only."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def promote(
    selection: str,
    test_data: Input[Dataset],
    metrics: Output[Metrics],
    report: Output[Markdown],
    blessing: Output[Artifact],
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
    gate: str = "",
    reason: str = "",
    mlflow_uri: str = "",
) -> NamedTuple("PromoteOutputs", [("decision", str), ("summary", str)]):
    """Add the selected model to the registry ``promote_to`` only if it passes the gate.

    ``selection`` is select-model's JSON summary (its ``model_uri`` is the model); the
    baseline is ``baseline_model``, else the registry's ``champion``. The gate is ``gate``
    (a gate file's YAML text, docs/gate.md), else ``promotion_metric`` must improve by more
    than ``min_improvement``. ``blessing`` gets the gate's verdict as JSON, passed or not;
    ``force_promote`` needs ``reason``; ``mlflow_uri`` also registers the version in MLflow.
    Logs go to {log_root}/{experiment}/{run}/promote; the run's ``_summary.json`` gets the
    decision. Defaults: PromoteConfig's (a test holds them equal). Returns ``promoted`` or
    ``kept baseline``, and the run summary as JSON.

    Args:
        selection: select-model's JSON summary.
        test_data: The test Dataset both models are scored on.
        metrics: Both models' scores and ``promoted`` (out).
        report: The Markdown report (out).
        blessing: The blessing as JSON (out).
        log_root: TensorBoard's root.
        promote_to: The registry (local, gs://, s3://).
        baseline_model: The model to beat; empty: the registry's champion.
        min_improvement: The shorthand gate's improvement.
        promotion_metric: The shorthand gate's metric.
        force_promote: Promote whatever the gate says (needs ``reason``).
        experiment: The experiment.
        run_name: The run.
        job_name: KFP's job name (the run's owner).
        tensorboard_url: Where TensorBoard is served.
        resume: Continue a run of this name.
        gate: A gate file's text.
        reason: Why ``force_promote``.
        mlflow_uri: An MLflow tracking server.
    """
    import json
    from collections import namedtuple

    from tbpipe.components.common.errors import exit_on_error
    from tbpipe.components.common.naming import step_place
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_claim import claim_run, run_owner
    from tbpipe.components.common.run_summary import write_run_summary
    from tbpipe.components.promotion.config import PromoteConfig
    from tbpipe.components.promotion.core import promote_model

    with exit_on_error("promote"):
        run, log_dir = step_place(log_root, experiment, run_name, job_name, "promote",
                                  metrics.uri)
        config = PromoteConfig(promotion_metric=promotion_metric,
                               min_improvement=min_improvement, force_promote=force_promote,
                               run_label=f"{experiment}/{run}", gate=gate, reason=reason,
                               mlflow_uri=mlflow_uri)
        claim_run(log_root, experiment, run, run_owner(job_name, metrics.uri), resume)
        chosen = json.loads(selection)
        decision = promote_model(chosen["model_uri"], test_data.path, promote_to,
                                 baseline_model, log_dir, report.path, config, log_root,
                                 blessing_uri=blessing.path)
        summary = write_run_summary(log_root, experiment, run, chosen, tensorboard_url,
                                    decision.as_dict())
    for name, value in decision.new_scores.items():
        metrics.log_metric(f"new_{name}", value)
    for name, value in (decision.baseline_scores or {}).items():
        metrics.log_metric(f"baseline_{name}", value)
    metrics.log_metric("promoted", float(decision.promoted))
    report_result("promote", decision.line().split(" (")[0])  # verdict and both scores
    outputs = namedtuple("PromoteOutputs", ["decision", "summary"])
    return outputs(decision.verdict, json.dumps(summary, sort_keys=True))
