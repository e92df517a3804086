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
    inference_service: str = "",
    drift_p_value: float = 1.0,
) -> NamedTuple("PromoteOutputs", [("decision", str), ("summary", str)]):
    """Add the selected model to the registry ``promote_to`` only if it passes the gate.

    The baseline is ``baseline_model``, else the registry's ``champion``. The gate is
    ``gate`` (a gate file's YAML text, docs/gate.md), else ``promotion_metric`` must improve
    by more than ``min_improvement``. Logs go to {log_root}/{experiment}/{run}/promote; the
    run's ``_summary.json`` gets the decision. The run is claimed for this KFP job (see
    preprocess). Defaults: PromoteConfig's (a test holds them equal).

    Args:
        selection: select-model's JSON summary; its ``model_uri`` is the model to promote.
        test_data: The test examples both models are scored on.
        log_root: Where every step's TensorBoard logs go; this step's are
            ``{log_root}/{experiment}/{run}/promote``.
        promote_to: The registry (local, gs://, s3://, any store): each promotion adds an
            immutable ``vN/`` and moves the alias ``champion`` to it.
        baseline_model: The model to beat; empty: the registry's champion (none there: the
            first run, value thresholds only).
        min_improvement: The shorthand gate: how much ``promotion_metric`` must improve by.
        promotion_metric: The shorthand gate's metric: accuracy or macro_f1.
        force_promote: Promote whatever the gate says (needs ``reason``).
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        tensorboard_url: The TensorBoard address the run summary links to.
        resume: Continue a run of this name that another KFP job claimed.
        gate: A gate file's YAML text (docs/gate.md); empty: the shorthand gate.
        reason: Why ``force_promote``; the registry records it.
        mlflow_uri: An MLflow tracking server where each promotion also registers a model
            version (alias ``champion``); empty: none.
        inference_service: A KServe InferenceService (``NAMESPACE/NAME``) each promotion
            points at the new champion (its ``storageUri`` on an object store, its pods for
            a local registry); empty: none.
        drift_p_value: check-data's drift p-value, a metric the gate may bound (1.0: no
            drift measured).

    Returns:
        metrics: Both models' test scores (``new_*``, ``baseline_*``) and ``promoted`` (0/1).
        report: A Markdown report: the scores side by side, the blessing and the decision.
        blessing: The gate's verdict as JSON, passed or not: every threshold with its value,
            baseline value, bound and verdict.
        decision: ``promoted`` or ``kept baseline``.
        summary: The run summary (``_summary.json``) as JSON.
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
                               run_label=here.label, gate=gate, reason=reason,
                               mlflow_uri=mlflow_uri, inference_service=inference_service)
        here.claim()
        chosen = json.loads(selection)
        decision = promote_model(chosen["model_uri"], test_data.path, promote_to,
                                 baseline_model, here.log_dir, report.path, config, log_root,
                                 blessing_uri=blessing.path,
                                 data_metrics={"drift_p_value": drift_p_value})
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
