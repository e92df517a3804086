"""The promotion gate: what a model must meet, in TFMA's terms, checked into a blessing.

A gate (docs/gate.md) is a plain YAML mapping::

    metrics:
      accuracy: {lower_bound: 0.95, change: {absolute: 0.0, direction: higher}}
      params:   {upper_bound: 2000000}
    classes:
      "7": {recall: {lower_bound: 0.95}}
      "*": {recall: {change: {absolute: -0.02, direction: higher}}}
    significance: 0.95

It is parsed once, where the run starts (:func:`parse_gate`: one line per error, naming the
key), and travels to the promote step as text. :func:`check_gate` scores nothing: it takes
both models' per-example predictions (:func:`score_examples`) and returns a
:class:`Blessing` with every threshold's value, baseline value, bound and verdict.

The rules, defined here once:

- a value threshold passes when ``lower_bound <= value <= upper_bound`` (inclusive);
- a change threshold compares ``diff = new - baseline``; the **relative** change is
  :data:`RELATIVE_CHANGE` (:func:`relative_change`). With ``direction: higher`` it
  passes when ``diff > absolute`` and ``relative > relative``; with ``lower`` when
  ``diff < absolute`` and ``relative < relative``. Strict, as in TFMA, so ``absolute: 0``
  with ``higher`` asks for a real improvement and ``absolute: -0.02`` allows a drop of
  less than 0.02;
- **significance** ``c``: the gain in ``significance_metric`` (accuracy or macro_f1) over
  the baseline, by a paired bootstrap over the test set (the same resampled examples
  scored for both models; seeded; ``resamples`` draws), must have its one-sided lower
  ``c`` confidence bound above 0: the ``1 - c`` quantile of the resampled gains is > 0;
- with no baseline (the first run), only value thresholds are checked and the blessing
  says so; change and significance thresholds are recorded as skipped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping

import numpy as np

from tbpipe.components.common.errors import InputError

#: Model-level metrics a gate may name, and whether higher is better.
METRICS = {"accuracy": True, "macro_f1": True, "macro_precision": True,
           "macro_recall": True, "loss": False, "params": False, "latency_ms": False,
           "drift_p_value": True}
#: Metrics of the run's data, not of a model (check-data's), and their value when not
#: measured: value thresholds only (a baseline model has none of its own).
DATA_METRICS = {"drift_p_value": 1.0}
#: Per-class metrics (scikit-learn's precision_recall_fscore_support).
CLASS_METRICS = ("precision", "recall", "f1")
#: A ``classes`` key that means every class.
EVERY_CLASS = "*"
DIRECTIONS = ("higher", "lower")
SIGNIFICANCE_METRICS = ("accuracy", "macro_f1")
MAX_RESAMPLES = 10_000
#: What a relative change is, the one definition: docs/gate.md states it, and a blessing
#: with a ``change.relative`` check carries it (``relative_change`` in ``as_dict``), so the
#: report and TensorBoard print it under the table. TFMA's docs, its proto and MLflow's
#: ``min_relative_change`` each word it differently.
RELATIVE_CHANGE = ("relative change = (new - baseline) / |baseline|, a fraction (0.01 is 1 %); "
                   "a baseline of exactly 0 gives +inf, -inf or 0 by the sign of the "
                   "difference")
_CHUNK_CELLS = 4_000_000  # resamples x examples drawn at once: bounded memory (~32 MB)
_EPSILON = 1e-7


class GateError(InputError):
    """A gate file that is not valid: one line per error, each naming the key."""


@dataclasses.dataclass(frozen=True)
class Change:
    """A change threshold against the baseline (see the module's rules)."""

    direction: str
    absolute: float | None = None
    relative: float | None = None


@dataclasses.dataclass(frozen=True)
class Threshold:
    """A value threshold (inclusive bounds) and/or a change threshold."""

    lower_bound: float | None = None
    upper_bound: float | None = None
    change: Change | None = None


@dataclasses.dataclass(frozen=True)
class Gate:
    """What a model must meet to be promoted.

    Attributes:
        metrics: Model-level metric (METRICS) -> its threshold.
        classes: Class name (or ``*``: every class) -> per-class metric -> threshold.
        significance: Confidence the gain must hold with (0 < c < 1); None: not checked.
        significance_metric: The metric the bootstrap compares (SIGNIFICANCE_METRICS).
        resamples: Bootstrap draws (<= MAX_RESAMPLES).
        seed: The bootstrap's seed.

    """

    metrics: Mapping[str, Threshold] = dataclasses.field(default_factory=dict)
    classes: Mapping[str, Mapping[str, Threshold]] = dataclasses.field(default_factory=dict)
    significance: float | None = None
    significance_metric: str = "accuracy"
    resamples: int = 1000
    seed: int = 0


def shorthand_gate(promotion_metric: str, min_improvement: float) -> Gate:
    """The gate ``--promotion-metric M --min-improvement X`` stands for.

    ``M`` must improve on the baseline by more than ``X`` (``change: {absolute: X,
    direction: higher}``), no value threshold: the first model always passes.
    """
    return Gate(metrics={promotion_metric: Threshold(
        change=Change("higher", absolute=float(min_improvement)))})


# ---- parsing: once, at the edge ----------------------------------------------------------

def parse_gate(text: str, source: str = "gate") -> Gate:
    """The Gate a YAML text states.

    Raises:
        GateError: every error found, one line each: ``{source}: metrics.accuracy.lower_bound:
            must be a number, not 'high'``.

    """
    import yaml

    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise GateError(f"{source}: not valid YAML{at}; write a mapping as docs/gate.md "
                        "shows") from None
    errors: list[str] = []
    gate = _gate_from(raw, errors)
    if errors:
        raise GateError("\n".join(f"{source}: {line}" for line in errors))
    return gate


def _gate_from(raw: object, errors: list[str]) -> Gate:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        hint = (" (a file name? the parameter holds the file's text: tbpipe run --gate FILE "
                "reads it)" if isinstance(raw, str) else "")
        errors.append(f"must be a mapping with metrics, classes and significance keys{hint}")
        return Gate()
    for key in sorted(set(raw) - {"metrics", "classes", "significance"}, key=str):
        errors.append(f"{key}: unknown key; use metrics, classes or significance")
    metrics = {}
    for name, spec in _mapping(raw.get("metrics"), "metrics", errors).items():
        if name not in METRICS:
            errors.append(f"metrics.{name}: unknown metric; use one of {', '.join(METRICS)}")
            continue
        metrics[name] = _threshold(spec, f"metrics.{name}", errors)
        if name in DATA_METRICS and metrics[name].change is not None:
            errors.append(f"metrics.{name}.change: {name} measures the run's data, not a "
                          "model: use lower_bound or upper_bound")
    classes: dict[str, dict[str, Threshold]] = {}
    for label, per_class in _mapping(raw.get("classes"), "classes", errors).items():
        key = str(label)
        classes[key] = {}
        for name, spec in _mapping(per_class, f"classes.{key}", errors).items():
            if name not in CLASS_METRICS:
                errors.append(f"classes.{key}.{name}: unknown per-class metric; use one of "
                              f"{', '.join(CLASS_METRICS)}")
                continue
            classes[key][name] = _threshold(spec, f"classes.{key}.{name}", errors)
    significance = dict(confidence=None, metric="accuracy", resamples=1000, seed=0)
    sig = raw.get("significance")
    if isinstance(sig, dict):
        for key in sorted(set(sig) - set(significance) , key=str):
            errors.append(f"significance.{key}: unknown key; use confidence, metric, "
                          "resamples or seed")
        significance.update({k: v for k, v in sig.items() if k in significance})
        if significance["confidence"] is None:
            errors.append("significance.confidence: required, e.g. 0.95")
    elif sig is not None:
        significance["confidence"] = sig
    confidence = significance["confidence"]
    where = "significance" + (".confidence" if isinstance(sig, dict) else "")
    if confidence is not None:
        confidence = _number(confidence, where, errors)
        if confidence is not None and not 0.5 <= confidence < 1.0:
            errors.append(f"{where}: {confidence:g} is outside [0.5, 1); e.g. 0.95")
    if significance["metric"] not in SIGNIFICANCE_METRICS:
        errors.append(f"significance.metric: {significance['metric']!r} is not one of "
                      f"{', '.join(SIGNIFICANCE_METRICS)}")
    resamples = significance["resamples"]
    if isinstance(resamples, bool) or not isinstance(resamples, int) \
            or not 100 <= resamples <= MAX_RESAMPLES:
        errors.append(f"significance.resamples: {resamples!r} must be an integer in "
                      f"[100, {MAX_RESAMPLES}]")
    if isinstance(significance["seed"], bool) or not isinstance(significance["seed"], int):
        errors.append(f"significance.seed: {significance['seed']!r} must be an integer")
    return Gate(metrics=metrics, classes=classes, significance=confidence,
                significance_metric=str(significance["metric"]),
                resamples=resamples if isinstance(resamples, int) else 1000,
                seed=significance["seed"] if isinstance(significance["seed"], int) else 0)


def _mapping(value: object, where: str, errors: list[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(f"{where}: must be a mapping, not {type(value).__name__}")
        return {}
    return value


def _number(value: object, where: str, errors: list[str]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        errors.append(f"{where}: must be a finite number, not {value!r}")
        return None
    return float(value)


def _threshold(spec: object, where: str, errors: list[str]) -> Threshold:
    spec = _mapping(spec, where, errors)
    for key in sorted(set(spec) - {"lower_bound", "upper_bound", "change"}, key=str):
        errors.append(f"{where}.{key}: unknown key; use lower_bound, upper_bound or change")
    lower = _number(spec["lower_bound"], f"{where}.lower_bound", errors) \
        if "lower_bound" in spec else None
    upper = _number(spec["upper_bound"], f"{where}.upper_bound", errors) \
        if "upper_bound" in spec else None
    if lower is not None and upper is not None and lower > upper:
        errors.append(f"{where}: lower_bound {lower:g} is above upper_bound {upper:g}")
    change = None
    if "change" in spec:
        raw = _mapping(spec["change"], f"{where}.change", errors)
        for key in sorted(set(raw) - {"absolute", "relative", "direction"}, key=str):
            errors.append(f"{where}.change.{key}: unknown key; use absolute, relative or "
                          "direction")
        direction = raw.get("direction")
        if direction not in DIRECTIONS:
            errors.append(f"{where}.change.direction: {direction!r} must be higher or lower")
        absolute = _number(raw["absolute"], f"{where}.change.absolute", errors) \
            if "absolute" in raw else None
        relative = _number(raw["relative"], f"{where}.change.relative", errors) \
            if "relative" in raw else None
        if "absolute" not in raw and "relative" not in raw:
            errors.append(f"{where}.change: give absolute or relative (or both)")
        change = Change(str(direction), absolute, relative)
    if lower is None and upper is None and change is None and not errors:
        errors.append(f"{where}: empty; give lower_bound, upper_bound or change")
    return Threshold(lower, upper, change)


# ---- scoring: per-example predictions ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ExampleScores:
    """A model's predictions on the test set, example by example, and its cost.

    Attributes:
        labels: True class per example (int).
        predicted: Predicted class per example.
        losses: Cross-entropy per example.
        num_classes: Classes the model predicts.
        class_names: Each class's name (``"0"``... when unnamed).
        params: The model's parameter count.
        latency_ms: Prediction time per image, in milliseconds (batched; after one
            untimed warm-up batch).

    """

    labels: np.ndarray
    predicted: np.ndarray
    losses: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    params: int
    latency_ms: float

    def metrics(self) -> dict[str, float]:
        """Every model-level metric a gate may name (METRICS)."""
        precision, recall, f1 = self.per_class()
        return {"accuracy": float(np.mean(self.labels == self.predicted)),
                "macro_f1": float(np.mean(f1)), "macro_precision": float(np.mean(precision)),
                "macro_recall": float(np.mean(recall)), "loss": float(np.mean(self.losses)),
                "params": float(self.params), "latency_ms": float(self.latency_ms)}

    def per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(precision, recall, F1) per class, by scikit-learn (0 where undefined)."""
        from sklearn.metrics import precision_recall_fscore_support

        precision, recall, f1, _ = precision_recall_fscore_support(
            self.labels, self.predicted, labels=np.arange(self.num_classes),
            average=None, zero_division=0)
        return precision, recall, f1


def score_examples(model, local_test: str, class_names: tuple[str, ...],  # noqa: ANN001
                   batch_size: int = 256, model_uri: str = "the model") -> ExampleScores:
    """Predict the local test Dataset with ``model``, keeping each example's outcome.

    The images are scaled as the evaluate step scales them. Memory: three numbers per
    example besides one batch.

    Raises:
        NonFiniteOutputs: a batch with a NaN or infinite output (the line names
            ``model_uri``).

    """
    from tbpipe.components.common.dataset import iter_shards, read_info
    from tbpipe.components.evaluation.core import NonFiniteOutputs
    from tbpipe.components.evaluation.metrics import as_probabilities, non_finite_rows

    info = read_info(local_test)
    labels, predicted, losses = [], [], []
    elapsed, warm = 0.0, False
    for images, truth in iter_shards(local_test):
        for start in range(0, len(truth), batch_size):
            batch = images[start:start + batch_size].astype(np.float32) / 255.0
            if not warm:  # the first call builds the graph: not part of the latency
                model.predict_on_batch(batch)
                warm = True
            began = time.perf_counter()
            outputs = np.asarray(model.predict_on_batch(batch))
            elapsed += time.perf_counter() - began
            bad = non_finite_rows(outputs)
            if bad:
                raise NonFiniteOutputs(f"{model_uri}: the model's outputs are NaN or infinite "
                                       f"for {bad} of {len(batch)} test images; the model "
                                       "is broken")
            probs = as_probabilities(outputs)
            want = np.asarray(truth[start:start + batch_size], dtype=np.int64)
            labels.append(want)
            predicted.append(probs.argmax(axis=1))
            losses.append(-np.log(np.clip(probs[np.arange(len(want)), want], _EPSILON, 1.0)))
    count = sum(len(x) for x in labels)
    return ExampleScores(np.concatenate(labels), np.concatenate(predicted),
                         np.concatenate(losses), info.num_classes, tuple(class_names),
                         int(model.count_params()), 1000.0 * elapsed / max(count, 1))


# ---- the check ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Check:
    """One threshold, checked.

    Attributes:
        metric: ``accuracy``, ``class 7 recall``...
        kind: ``lower_bound``, ``upper_bound``, ``change.absolute``, ``change.relative``
            or ``significance``.
        value: The new model's figure (for a change: the change; for significance: the
            lower confidence bound of the gain).
        baseline: The baseline's figure (None: no baseline).
        bound: The threshold.
        verdict: ``passed``, ``failed`` or ``skipped`` (no baseline).

    """

    metric: str
    kind: str
    value: float | None
    baseline: float | None
    bound: float
    verdict: str

    def line(self) -> str:
        """``accuracy change.absolute +0.0100 > 0 failed``."""
        bounds = {"lower_bound": ">=", "upper_bound": "<="}
        if self.kind in bounds:
            relation = bounds[self.kind]
            shown = "n/a" if self.value is None else f"{self.value:.4g}"
        else:  # a change ("accuracy (lower)": below the bound) or the significance
            relation = "<" if self.metric.endswith("(lower)") else ">"
            shown = "n/a" if self.value is None else f"{self.value:+.4g}"
        return f"{self.metric} {self.kind} {shown} {relation} {self.bound:g}: {self.verdict}"


@dataclasses.dataclass(frozen=True)
class Blessing:
    """The gate's verdict on a model, written whether it passed or not.

    Attributes:
        passed: Every check passed (skipped ones do not count).
        checks: Every threshold with its value, baseline value, bound and verdict.
        first_run: No baseline: only value thresholds were checked.
        new: The new model's metrics.
        baseline: The baseline's metrics (None: none).
        gain_interval: The bootstrap's (confidence, lower bound, mean gain), when checked.

    """

    passed: bool
    checks: tuple[Check, ...]
    first_run: bool
    new: Mapping[str, float]
    baseline: Mapping[str, float] | None
    gain_interval: tuple[float, float, float] | None = None

    def failed(self) -> list[Check]:
        """The checks that failed."""
        return [c for c in self.checks if c.verdict == "failed"]

    def summary(self) -> str:
        """``gate passed (4 checks)`` or ``gate failed: accuracy change.absolute ...``."""
        counted = [c for c in self.checks if c.verdict != "skipped"]
        first = "; first run: no baseline, value thresholds only" if self.first_run else ""
        if self.passed:
            return f"gate passed ({len(counted)} checks{first})"
        failed = self.failed()
        return (f"gate failed: {failed[0].line()} ({len(failed)} of {len(counted)} checks "
                f"failed{first})")

    def as_dict(self) -> dict:
        """JSON-ready (the KFP artifact, ``blessing.json`` in a version).

        With a ``change.relative`` check it also holds ``relative_change``: its definition
        (:data:`RELATIVE_CHANGE`), which the report prints under the table.
        """
        relative = any(c.kind == "change.relative" for c in self.checks)
        return {"format": "tbpipe.blessing.v1", "passed": self.passed,
                "first_run": self.first_run, "summary": self.summary(),
                "checks": [dataclasses.asdict(c) for c in self.checks],
                "new": dict(self.new),
                "baseline": dict(self.baseline) if self.baseline is not None else None,
                "gain_interval": (dict(zip(("confidence", "lower_bound", "mean_gain"),
                                           self.gain_interval, strict=True))
                                  if self.gain_interval else None),
                **({"relative_change": RELATIVE_CHANGE} if relative else {})}


def relative_change(new: float, baseline: float) -> float:
    """The relative change of ``new`` over ``baseline``, as :data:`RELATIVE_CHANGE` states."""
    diff = new - baseline
    if baseline == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / abs(baseline)


def _checks_for(metric: str, threshold: Threshold, value: float,
                baseline: float | None) -> list[Check]:
    checks = []
    if threshold.lower_bound is not None:
        checks.append(Check(metric, "lower_bound", value, baseline, threshold.lower_bound,
                            "passed" if value >= threshold.lower_bound else "failed"))
    if threshold.upper_bound is not None:
        checks.append(Check(metric, "upper_bound", value, baseline, threshold.upper_bound,
                            "passed" if value <= threshold.upper_bound else "failed"))
    change = threshold.change
    if change is None:
        return checks
    label = f"{metric} ({change.direction})"
    for kind, bound in (("absolute", change.absolute), ("relative", change.relative)):
        if bound is None:
            continue
        if baseline is None:
            checks.append(Check(label, f"change.{kind}", None, None, bound, "skipped"))
            continue
        moved = value - baseline if kind == "absolute" else relative_change(value, baseline)
        ok = moved > bound if change.direction == "higher" else moved < bound
        checks.append(Check(label, f"change.{kind}", moved, baseline, bound,
                            "passed" if ok else "failed"))
    return checks


def check_gate(gate: Gate, new: ExampleScores, baseline: ExampleScores | None,
               data_metrics: Mapping[str, float] | None = None) -> Blessing:
    """Check ``new`` (against ``baseline``, None on a first run) with ``gate``.

    ``data_metrics``: the run's DATA_METRICS (check-data's ``drift_p_value``); one not
    given has its DATA_METRICS value. They join the new model's metrics, value thresholds
    only.

    Raises:
        InputError: a ``classes`` key that names no class of the test set.

    """
    new_metrics = {**new.metrics(), **DATA_METRICS, **(data_metrics or {})}
    base_metrics = baseline.metrics() if baseline is not None else None
    checks: list[Check] = []
    for metric, threshold in gate.metrics.items():
        checks += _checks_for(metric, threshold, new_metrics[metric],
                              base_metrics.get(metric) if base_metrics else None)
    if gate.classes:
        names = list(new.class_names) or [str(k) for k in range(new.num_classes)]
        new_pc = dict(zip(CLASS_METRICS, new.per_class(), strict=True))
        base_pc = (dict(zip(CLASS_METRICS, baseline.per_class(), strict=True))
                   if baseline is not None else None)
        for label, per_class in gate.classes.items():
            if label == EVERY_CLASS:
                chosen = list(range(len(names)))
            elif label in names:
                chosen = [names.index(label)]
            else:
                raise InputError(f"gate: classes.{label}: the test set has no class {label!r} "
                                 f"(its classes: {', '.join(names[:20])})")
            for k in chosen:
                for metric, threshold in per_class.items():
                    checks += _checks_for(
                        f"class {names[k]} {metric}", threshold, float(new_pc[metric][k]),
                        float(base_pc[metric][k]) if base_pc else None)
    interval = None
    if gate.significance is not None:
        if baseline is None:
            checks.append(Check(f"{gate.significance_metric} gain", "significance", None,
                                None, 0.0, "skipped"))
        else:
            gains = bootstrap_gains(new, baseline, gate.significance_metric, gate.resamples,
                                    gate.seed)
            low = float(np.quantile(gains, 1.0 - gate.significance))
            interval = (gate.significance, low, float(gains.mean()))
            checks.append(Check(f"{gate.significance_metric} gain at "
                                f"{gate.significance:g} confidence", "significance", low,
                                0.0, 0.0, "passed" if low > 0 else "failed"))
    passed = not any(c.verdict == "failed" for c in checks)
    return Blessing(passed, tuple(checks), baseline is None, new_metrics, base_metrics,
                    interval)


def bootstrap_gains(new: ExampleScores, baseline: ExampleScores, metric: str,
                    resamples: int, seed: int) -> np.ndarray:
    """The gain ``metric(new) - metric(baseline)`` on ``resamples`` paired resamples.

    Each resample draws N test examples with replacement (numpy's PCG64, ``seed``); both
    models are scored on the same draw. Vectorised, in chunks of at most
    ``_CHUNK_CELLS`` drawn indices, so memory stays bounded whatever N.
    """
    if not np.array_equal(new.labels, baseline.labels):
        raise InputError("the new model and the baseline were scored on different test "
                         "examples; a paired bootstrap needs the same test set")
    n, k = len(new.labels), new.num_classes
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _CHUNK_CELLS // max(n, 1))
    gains = []
    for start in range(0, resamples, per_chunk):
        rows = min(per_chunk, resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        if metric == "accuracy":
            right_new = (new.labels == new.predicted)[idx].mean(axis=1)
            right_base = (baseline.labels == baseline.predicted)[idx].mean(axis=1)
            gains.append(right_new - right_base)
        else:
            gains.append(_macro_f1(new.labels[idx], new.predicted[idx], k)
                         - _macro_f1(baseline.labels[idx], baseline.predicted[idx], k))
    return np.concatenate(gains)


def _macro_f1(truth: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """Macro F1 of each row (rows: resamples), by per-row confusion counts; 0 where undefined."""
    rows = truth.shape[0]
    offset = (np.arange(rows)[:, None] * k)
    true_pos = np.bincount((offset + truth)[truth == predicted], minlength=rows * k)
    actual = np.bincount((offset + truth).ravel(), minlength=rows * k)
    called = np.bincount((offset + predicted).ravel(), minlength=rows * k)
    true_pos, actual, called = (a.reshape(rows, k).astype(np.float64)
                                for a in (true_pos, actual, called))
    denominator = actual + called
    f1 = np.divide(2 * true_pos, denominator, out=np.zeros_like(true_pos),
                   where=denominator > 0)
    return f1.mean(axis=1)
