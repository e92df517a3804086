"""Champion and challenger: promote the run's model only if it beats the production model.

Both models are scored on the same test split by the evaluate step's own scoring
(:func:`tbpipe.components.evaluation.core.score_model`), logged side by side to TensorBoard,
and compared on one metric; the new model is copied to ``promote_to`` (an atomic swap, with
its ``promotion.json``: :mod:`tbpipe.components.promotion.publish`) only if it wins.
"""

from __future__ import annotations

import datetime

from tbpipe.components.common import storage
from tbpipe.components.common.dataset import read_info
from tbpipe.components.common.model_format import load_fitting_model
from tbpipe.components.common.tensorboard.writer import markdown_table, open_writer
from tbpipe.components.evaluation.config import EvaluateConfig, EvaluateResult
from tbpipe.components.promotion import publish
from tbpipe.components.promotion.config import PROMOTION_METRICS, PromoteConfig, PromotionDecision

PROMOTE_STEP = 0
_NEW_HINT = "pass the model the run selected"
_BASELINE_HINT = ("the baseline must take the same images and predict the same classes as "
                  "the new model; pass another --baseline-model or --promote-to")


def decide(new_scores: dict[str, float], baseline_scores: dict[str, float] | None,
           baseline_uri: str, config: PromoteConfig) -> PromotionDecision:
    """Promote or keep the baseline: the one rule.

    Promote when forced, when there is no baseline, or when the new model beats the baseline
    on ``config.promotion_metric`` by more than 0 and at least ``config.min_improvement``;
    else keep the baseline.
    """
    metric = config.promotion_metric
    args = dict(metric=metric, new_scores=dict(new_scores),
                baseline_scores=dict(baseline_scores) if baseline_scores else None,
                baseline_uri=baseline_uri, forced=config.force_promote)
    if baseline_scores is None:
        return PromotionDecision(True, "no baseline: the first model is promoted", **args)
    gain = new_scores[metric] - baseline_scores[metric]
    beats = gain > 0 and gain >= config.min_improvement
    if config.force_promote:
        why = "beats" if beats else "does not beat"
        return PromotionDecision(True, f"forced by --force-promote (it {why} the baseline: "
                                       f"{gain:+.4f})", **args)
    if beats:
        return PromotionDecision(True, f"beats the baseline by {gain:+.4f} >= "
                                       f"{config.min_improvement:g}", **args)
    need = (f"below the required {config.min_improvement:g}" if gain > 0
            else "not above 0")
    return PromotionDecision(False, f"improvement {gain:+.4f} is {need}", **args)


def promote_model(model_uri: str, test_uri: str, promote_to: str, baseline_uri: str,
                  log_dir: str, report_uri: str, config: PromoteConfig) -> PromotionDecision:
    """Score the new model and the baseline on ``test_uri``; promote the new one if it wins.

    Args:
        model_uri: The run's selected Model folder (local or gs://).
        test_uri: The test Dataset both are scored on.
        promote_to: The production folder.
        baseline_uri: The model to beat (a Model folder or ``.keras``); empty: what
            ``promote_to`` holds, if anything.
        log_dir: ``{log_root}/{experiment}/{run}/promote``.
        report_uri: Where the Markdown report goes.
        config: The settings.

    Raises:
        InputError: a model that does not fit the test data (one line naming it), a
            ``promote_to`` that is not a production folder.
        StorageError: the copy failed; ``promote_to`` still holds its previous model.

    """
    publish.check_target(promote_to)
    recovered = publish.recover(promote_to)
    if recovered:
        print(f"promote: {recovered}")
    if not baseline_uri and publish.holds_model(promote_to):
        baseline_uri = promote_to
    scoring = EvaluateConfig(batch_size=config.batch_size)
    with storage.local_input(test_uri) as local_test:
        info = read_info(local_test)
        new = _score(model_uri, local_test, test_uri, info, scoring, _NEW_HINT)
        baseline = (_score(baseline_uri, local_test, test_uri, info, scoring, _BASELINE_HINT)
                    if baseline_uri else None)
    decision = decide(_scores(new), _scores(baseline) if baseline else None, baseline_uri,
                      config)
    if decision.promoted:
        publish.publish(model_uri, promote_to, _entry(decision, model_uri, config))
    with open_writer(log_dir) as writer:
        log_decision(writer, decision)
    storage.write_bytes(report_uri, render_report(decision, promote_to, config).encode())
    print(f"promote: {decision.line()}")
    return decision


def _score(uri: str, local_test: str, test_uri: str, info, scoring: EvaluateConfig,  # noqa: ANN001
           hint: str) -> EvaluateResult:
    from tbpipe.components.evaluation.core import score_model

    model, meta = load_fitting_model(uri, info.image_shape, info.num_classes, hint,
                                     class_names=info.class_names)
    return score_model(model, meta, local_test, test_uri, scoring)[0]


def _scores(result: EvaluateResult) -> dict[str, float]:
    return {name: float(getattr(result, name)) for name in PROMOTION_METRICS}


def _entry(decision: PromotionDecision, model_uri: str, config: PromoteConfig) -> dict:
    """One ``promotion.json`` entry: what, when, from which run, with which metrics."""
    return {
        "promoted_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run": config.run_label,
        "source_model": model_uri,
        "metric": decision.metric,
        "min_improvement": config.min_improvement,
        "forced": decision.forced,
        "reason": decision.reason,
        "new": decision.new_scores,
        "baseline": ({"uri": decision.baseline_uri, **decision.baseline_scores}
                     if decision.baseline_scores else None),
    }


def log_decision(writer, decision: PromotionDecision) -> None:  # noqa: ANN001
    """Both models' scores side by side, and the decision, in TensorBoard.

    Tags: ``promote/<metric>/new`` and ``promote/<metric>/baseline`` scalars (no baseline:
    none), ``promote/promoted`` (1 or 0), ``promote/decision`` text.
    """
    for metric, value in decision.new_scores.items():
        writer.add_scalar(f"promote/{metric}/new", value, PROMOTE_STEP)
        if decision.baseline_scores:
            writer.add_scalar(f"promote/{metric}/baseline", decision.baseline_scores[metric],
                              PROMOTE_STEP)
    writer.add_scalar("promote/promoted", float(decision.promoted), PROMOTE_STEP)
    writer.add_text("promote/decision", decision.line(), PROMOTE_STEP)


def render_report(decision: PromotionDecision, promote_to: str, config: PromoteConfig) -> str:
    """The promote step's Markdown report: the decision line and both models' scores."""
    base = decision.baseline_scores or {}
    rows = [[m, f"{decision.new_scores[m]:.4f}", f"{base[m]:.4f}" if base else "-"]
            for m in PROMOTION_METRICS]
    return "\n".join([
        f"# Promotion {config.run_label}".rstrip(),
        "",
        f"**{decision.line()}**",
        "",
        markdown_table(["metric", "new model", "baseline"], rows),
        "",
        f"- production folder: `{promote_to}`",
        f"- baseline: `{decision.baseline_uri or 'none'}`",
        f"- compared on: {decision.metric}, minimum improvement {config.min_improvement:g}"
        + (", forced" if decision.forced else ""),
        "",
    ])
