"""Champion and challenger: promote the run's model only if it beats the production model.

Both models are scored on the same test split by the evaluate step's own scoring
(:func:`tbpipe.components.evaluation.core.score_model`), logged side by side to TensorBoard,
and compared on one metric; the new model becomes a new version of ``promote_to`` (its
``promotion.json`` pointer written last: :mod:`tbpipe.components.promotion.publish`) only if
it wins. A model with non-finite weights or outputs is never promoted, and a broken baseline
is never compared with silently. The whole promotion holds the target's lock, so two
promotions to one folder are decided and written one after the other.
"""

from __future__ import annotations

import dataclasses
import datetime
import math

from tbpipe.components.common import storage
from tbpipe.components.common.dataset import read_info
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.model_format import load_fitting_model
from tbpipe.components.common.tensorboard.writer import markdown_table, open_writer
from tbpipe.components.evaluation.config import EvaluateConfig, EvaluateResult
from tbpipe.components.promotion import publish, serving_check
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
    for who, scores in (("new model", new_scores), ("baseline", baseline_scores or {})):
        bad = {k: v for k, v in scores.items() if not math.isfinite(v)}
        if bad:
            raise InputError(f"{baseline_uri if who == 'baseline' else 'the new model'}: the "
                             f"{who}'s scores are not finite ({bad}); a broken model is never "
                             "compared: retrain it or pass another --baseline-model")
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
                  log_dir: str, report_uri: str, config: PromoteConfig,
                  log_root: str = "") -> PromotionDecision:
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
        log_root: The run's log root: ``promote_to`` may not be it or inside it.

    Raises:
        InputError: a model that does not fit the test data (one line naming it), a
            ``promote_to`` tbpipe cannot own, a new model that is broken (BrokenModel: its
            weights or outputs are not finite), a broken baseline without ``force_promote``.
        StorageError: a copy failed, or another promotion held the lock too long;
            production still serves the version it served.

    """
    target = publish.check_target(promote_to, log_root)
    _, note = publish.resolve_target(promote_to)
    if note:
        print(f"promote: {note}")
    with publish.promotion_lock(target) as lease:
        baseline_uri = baseline_uri or publish.current_model(target)
        scoring = EvaluateConfig(batch_size=config.batch_size)
        with storage.local_input(test_uri) as local_test:
            info = read_info(local_test)
            try:
                new = _score(model_uri, local_test, test_uri, info, scoring, _NEW_HINT)
            except BrokenModel as exc:
                raise BrokenModel(f"{exc}; it is not promoted: retrain it") from exc
            broken = ""
            try:
                baseline = (_score(baseline_uri, local_test, test_uri, info, scoring,
                                   _BASELINE_HINT) if baseline_uri else None)
            except BrokenModel as exc:
                if not config.force_promote:
                    raise BrokenModel(f"{exc}; it is the baseline: pass --force-promote to "
                                     "replace it, or another --baseline-model") from exc
                baseline, broken = None, str(exc)
        decision = decide(_scores(new), _scores(baseline) if baseline else None, baseline_uri,
                          config)
        if broken:
            decision = dataclasses.replace(decision, forced=True, reason=(
                f"forced by --force-promote: the baseline is broken ({broken[:200]})"))
        if decision.promoted:
            served = serving_check.check_serving(model_uri)  # ServingCheckFailed: not promoted
            print(f"promote: serving check {served.line()}", flush=True)
            record = publish.publish(model_uri, target, {
                **_entry(decision, model_uri, config), "serving_check": served.as_dict()}, lease)
            version = record["current"]["version"]
            decision = dataclasses.replace(decision, version=version,
                                           reason=f"{decision.reason}; production is {version}")
    with open_writer(log_dir) as writer:
        log_decision(writer, decision)
    storage.write_bytes(report_uri, render_report(decision, target, config).encode())
    print(f"promote: {decision.line()}")
    if decision.version:
        served = storage.join(target, decision.version)
        print(f"promote: production is {served} (serve {storage.join(served, 'saved_model')})")
    return decision


class BrokenModel(InputError):
    """A model whose weights or outputs are not finite: never promoted, never compared."""


def _score(uri: str, local_test: str, test_uri: str, info, scoring: EvaluateConfig,  # noqa: ANN001
           hint: str) -> EvaluateResult:
    from tbpipe.components.evaluation.core import NonFiniteOutputs, score_model
    from tbpipe.components.training.divergence import non_finite_weights

    model, meta = load_fitting_model(uri, info.image_shape, info.num_classes, hint)
    bad = non_finite_weights(model)
    if bad:
        raise BrokenModel(f"{uri}: the weights hold NaN or infinite values ({', '.join(bad[:3])}"
                      "); the model is broken")
    try:
        return score_model(model, meta, local_test, test_uri, scoring, model_uri=uri)[0]
    except NonFiniteOutputs as exc:
        raise BrokenModel(str(exc)) from exc


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
