"""Champion and challenger: promote the run's model only if it passes the gate.

Both models are scored on the same test split, example by example
(:func:`tbpipe.components.promotion.gate.score_examples`: the evaluate step's scaling and
non-finite check, keeping each example's outcome for per-class figures and the paired
bootstrap), checked by the gate (:func:`~tbpipe.components.promotion.gate.check_gate`: a
blessing, always), logged side by side to TensorBoard; the new model becomes a new version
of the registry ``promote_to`` and its ``champion`` (the ``promotion.json`` pointer written
last: :mod:`tbpipe.components.promotion.publish`) only if the gate passed or the promotion
is forced with a reason. A model with non-finite weights or outputs is never promoted, and
a broken baseline is never compared with silently. The whole promotion holds the target's
lock, so two promotions to one registry are decided and written one after the other.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math

from tbpipe.components.common import storage
from tbpipe.components.common.dataset import read_info
from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.common.model_format import load_fitting_model
from tbpipe.components.common.tensorboard.writer import markdown_table, open_writer
from tbpipe.components.promotion import inference_service, publish, serving_check
from tbpipe.components.promotion.config import PROMOTION_METRICS, PromoteConfig, PromotionDecision
from tbpipe.components.promotion.gate import Blessing, ExampleScores, check_gate, score_examples

PROMOTE_STEP = 0
_NEW_HINT = "pass the model the run selected"
_BASELINE_HINT = ("the baseline must take the same images and predict the same classes as "
                  "the new model; pass another --baseline-model or --promote-to")


def decide(blessing: Blessing, baseline_uri: str, config: PromoteConfig) -> PromotionDecision:
    """Promote or keep the baseline: the one rule, the gate's verdict.

    Promote when the gate passed (a first run: its value thresholds only) or when forced
    (``config.reason`` says why); else keep the baseline. ``metric`` (the decision line's)
    is ``config.promotion_metric``.
    """
    for who, scores in (("new model", blessing.new), ("baseline", blessing.baseline or {})):
        bad = {k: v for k, v in scores.items() if not math.isfinite(v)}
        if bad:
            raise InputError(f"{baseline_uri if who == 'baseline' else 'the new model'}: the "
                             f"{who}'s scores are not finite ({bad}); a broken model is never "
                             "compared: retrain it or pass another --baseline-model")
    args = dict(metric=config.promotion_metric,
                new_scores={m: blessing.new[m] for m in PROMOTION_METRICS},
                baseline_scores=({m: blessing.baseline[m] for m in PROMOTION_METRICS}
                                 if blessing.baseline is not None else None),
                baseline_uri=baseline_uri, forced=config.force_promote,
                blessing=blessing.as_dict())
    summary = blessing.summary()
    if config.force_promote:
        return PromotionDecision(True, f"forced by --force-promote ({config.reason}); "
                                       f"{summary}", **args)
    if blessing.first_run and blessing.passed:
        return PromotionDecision(True, f"no baseline: the first model is promoted; {summary}",
                                 **args)
    return PromotionDecision(blessing.passed, summary, **args)


def promote_model(model_uri: str, test_uri: str, promote_to: str, baseline_uri: str,
                  log_dir: str, report_uri: str, config: PromoteConfig,
                  log_root: str = "", blessing_uri: str = "",
                  data_metrics: dict[str, float] | None = None) -> PromotionDecision:
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
        blessing_uri: Where the blessing goes as JSON (passed or not); empty: nowhere but
            the report, TensorBoard and the version.
        data_metrics: The run's data metrics the gate may name (``drift_p_value``:
            check-data's); ``gate.DATA_METRICS`` has the value of one not given.

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
    rules = config.rules()
    if config.mlflow_uri:  # a dead server fails here, before anything changes
        from tbpipe.components.promotion.mlflow_registry import check_server

        check_server(config.mlflow_uri)
    service = (inference_service.prepare(config.inference_service, target)  # before any change
               if config.inference_service else None)
    with publish.promotion_lock(target) as lease:
        baseline_uri = baseline_uri or publish.current_model(target)
        with storage.local_input(test_uri) as local_test:
            info = read_info(local_test)
            try:
                new = _score(model_uri, local_test, test_uri, info, config, _NEW_HINT)
            except BrokenModel as exc:
                raise BrokenModel(f"{exc}; it is not promoted: retrain it") from exc
            broken = ""
            try:
                baseline = (_score(baseline_uri, local_test, test_uri, info, config,
                                   _BASELINE_HINT) if baseline_uri else None)
            except BrokenModel as exc:
                if not config.force_promote:
                    raise BrokenModel(f"{exc}; it is the baseline: pass --force-promote to "
                                     "replace it, or another --baseline-model") from exc
                baseline, broken = None, str(exc)
        blessing = check_gate(rules, new, baseline, data_metrics)
        decision = decide(blessing, baseline_uri, config)
        if broken:
            decision = dataclasses.replace(decision, forced=True, reason=(
                f"forced by --force-promote ({config.reason}): the baseline is broken "
                f"({broken[:200]})"))
        if decision.promoted:
            served = serving_check.check_serving(model_uri)  # ServingCheckFailed: not promoted
            print(f"promote: serving check {served.line()}", flush=True)
            blessing_json = json.dumps(decision.blessing, indent=2, sort_keys=True).encode()
            record = publish.publish(
                model_uri, target, {**_entry(decision, model_uri, config, info.digest),
                                    "test_data": test_uri,  # check-data: copies of it
                                    "serving_check": served.as_dict()},
                lease, extras={publish.BLESSING_FILE: blessing_json})
            version = record["current"]["version"]
            decision = dataclasses.replace(decision, version=version,
                                           reason=f"{decision.reason}; production is {version}")
            if config.mlflow_uri:
                from tbpipe.components.promotion.mlflow_registry import register_version

                print("promote: " + register_version(config.mlflow_uri, target,
                                                     record["current"], decision.blessing))
            if service is not None:
                print("promote: " + _follow(service, target, version), flush=True)
    with open_writer(log_dir) as writer:
        log_decision(writer, decision)
    storage.write_bytes(report_uri, render_report(decision, target, config).encode())
    if blessing_uri:
        storage.write_bytes(blessing_uri, json.dumps(decision.blessing, indent=2,
                                                     sort_keys=True).encode())
    print(f"promote: {decision.line()}")
    if decision.version:
        served = storage.join(target, decision.version)
        link = publish.serving_link(target)  # locally the link that follows champion
        serve = f"{link}, which follows champion" if link else publish.served_uri(
            target, decision.version)
        print(f"promote: production is {served} (serve {serve})")
    return decision


def _follow(service: inference_service.ServiceRef, target: str, version: str) -> str:
    """Point ``service`` at the new champion; a failure is a warning (the registry moved)."""
    try:
        return inference_service.follow(service, target, version)
    except TbpipeError as exc:
        return (f"warning: {version} is the champion, but {exc}; run tbpipe models alias "
                f"{target} {publish.CHAMPION} --inference-service {service}")


class BrokenModel(InputError):
    """A model whose weights or outputs are not finite: never promoted, never compared."""


def _score(uri: str, local_test: str, test_uri: str, info, config: PromoteConfig,  # noqa: ANN001
           hint: str) -> ExampleScores:
    from tbpipe.components.evaluation.core import (
        NonFiniteOutputs,
        check_fits,
        class_names_for,
    )
    from tbpipe.components.training.divergence import non_finite_weights

    model, meta = load_fitting_model(uri, info.image_shape, info.num_classes, hint,
                                     class_names=info.class_names)
    bad = non_finite_weights(model)
    if bad:
        raise BrokenModel(f"{uri}: the weights hold NaN or infinite values ({', '.join(bad[:3])}"
                      "); the model is broken")
    check_fits(model, local_test, test_uri)
    try:
        return score_examples(model, local_test, class_names_for(local_test, meta),
                              config.batch_size, uri)
    except NonFiniteOutputs as exc:
        raise BrokenModel(str(exc)) from exc


def _entry(decision: PromotionDecision, model_uri: str, config: PromoteConfig,
           data_digest: str) -> dict:
    """One version's registry entry: what, when, from which run, why, with which metrics."""
    blessing = decision.blessing or {}
    return {
        "promoted_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "run": config.run_label,
        "source_model": model_uri,
        "metric": decision.metric,
        "min_improvement": config.min_improvement,
        "gate": config.gate,
        "forced": decision.forced,
        "force_reason": config.reason if decision.forced else "",
        "reason": decision.reason,
        "blessed": bool(blessing.get("passed")),
        "data_digest": data_digest,
        "mlflow_uri": config.mlflow_uri,  # where it is registered too: rollback follows there
        "metrics": blessing.get("new", decision.new_scores),
        "new": decision.new_scores,
        "baseline": ({"uri": decision.baseline_uri, **decision.baseline_scores}
                     if decision.baseline_scores else None),
    }


def log_decision(writer, decision: PromotionDecision) -> None:  # noqa: ANN001
    """Both models' scores side by side, the decision and the blessing, in TensorBoard.

    Tags: ``promote/<metric>/new`` and ``promote/<metric>/baseline`` scalars (no baseline:
    none), ``promote/promoted`` (1 or 0), ``promote/decision`` text, ``promote/blessing``
    text (the table of checks).
    """
    for metric, value in decision.new_scores.items():
        writer.add_scalar(f"promote/{metric}/new", value, PROMOTE_STEP)
        if decision.baseline_scores:
            writer.add_scalar(f"promote/{metric}/baseline", decision.baseline_scores[metric],
                              PROMOTE_STEP)
    writer.add_scalar("promote/promoted", float(decision.promoted), PROMOTE_STEP)
    writer.add_text("promote/decision", decision.line(), PROMOTE_STEP)
    if decision.blessing:
        writer.add_text("promote/blessing", blessing_markdown(decision.blessing), PROMOTE_STEP)


def blessing_markdown(blessing: dict) -> str:
    """A blessing (``Blessing.as_dict()``) as Markdown: its summary and a table of checks.

    A blessing with a relative change threshold gets the definition it carries
    (``gate.RELATIVE_CHANGE``) under the table.
    """
    rows = []
    for c in blessing["checks"]:
        value = "-" if c["value"] is None else f"{c['value']:.4g}"
        base = "-" if c["baseline"] is None else f"{c['baseline']:.4g}"
        rows.append([c["metric"], c["kind"], value, base, f"{c['bound']:g}",
                     f"**{c['verdict']}**"])
    table = (markdown_table(["metric", "threshold", "value", "baseline", "bound", "verdict"],
                            rows) if rows else "(no thresholds)")
    defined = (f"\n\n`change.relative`: {blessing['relative_change']}"
               if blessing.get("relative_change") else "")
    return f"**{blessing['summary']}**\n\n{table}{defined}"


def render_report(decision: PromotionDecision, promote_to: str, config: PromoteConfig) -> str:
    """The promote step's Markdown report: the decision line, both scores, the blessing."""
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
        "## Blessing",
        "",
        blessing_markdown(decision.blessing) if decision.blessing else "(none)",
        "",
        f"- registry: `{promote_to}`" + (f", new version `{decision.version}`"
                                         if decision.version else ""),
        f"- baseline: `{decision.baseline_uri or 'none'}`",
        "- gate: " + ("the --gate file" if config.gate else
                      f"{decision.metric} must improve by more than "
                      f"{config.min_improvement:g}")
        + (f", forced: {config.reason}" if decision.forced else ""),
        "",
    ])
