"""Evaluate a trained model on a test Dataset: metrics, TensorBoard summaries, a report.

The test set is streamed shard by shard and batch by batch; only running sums are kept (the
confusion matrix, the summed loss and per-class score histograms for the PR curves), so
memory stays bounded whatever the size of the test set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import numpy as np

from components.common import storage
from components.common.dataset import iter_shards, read_info
from components.common.errors import InputError
from components.common.tblog import open_writer
from components.evaluate.metrics import (  # noqa: F401 - re-exported: imported from here
    _EPSILON,
    PR_THRESHOLDS,
    ClassScores,
    as_probabilities,
    class_scores,
    confusion_matrix,
    pr_curve,
    pr_histograms,
)

MODEL_FILE = "model.keras"
MODEL_INFO = "model.json"
FINETUNE_MODES = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Settings of the evaluate step.

    Attributes:
        accuracy_target: The accuracy in [0, 1] the model must reach to "meet the target".
        batch_size: Examples per prediction batch.
        tensorboard_url: The TensorBoard the report links to.
        run_label: ``{experiment}/{run}``, used to filter the TensorBoard link to this run.

    """

    accuracy_target: float = 0.95
    batch_size: int = 256
    tensorboard_url: str = "http://127.0.0.1:6006"
    run_label: str = ""


@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    """What the evaluation found."""

    loss: float
    accuracy: float
    accuracy_target: float
    meets_target: bool
    num_examples: int
    per_class: tuple[ClassScores, ...]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion_matrix: list[list[int]]

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics (``meets_target`` as 0/1) for KFP Metrics artifacts."""
        names = ("loss", "accuracy", "macro_precision", "macro_recall", "macro_f1",
                 "meets_target", "num_examples")
        return {name: float(getattr(self, name)) for name in names}


def evaluate_model(model_uri: str, test_uri: str, report_uri: str, log_dir: str,
                   config: EvaluateConfig) -> EvaluateResult:
    """Evaluate the model folder at ``model_uri`` on the Dataset at ``test_uri``.

    Logs ``eval/*`` scalars, the confusion matrix (image and text) and per-class PR curves
    to ``log_dir``, and writes a Markdown report to ``report_uri``.

    Raises:
        InputError: A bad target or batch size, a folder that is not a model, or a model
            whose input shape or class count does not fit the test data.

    """
    from components.evaluate.report import log_evaluation, render_report

    check_config(config)
    with storage.local_input(model_uri) as local_model, \
            storage.local_input(test_uri) as local_test:
        model, model_info = load_model(local_model, model_uri)
        check_fits(model, local_test, test_uri)
        confusion, loss_sum, pr_hist = _predict_totals(model, local_test, config.batch_size)
    result = summarize(confusion, loss_sum, config.accuracy_target)
    with open_writer(log_dir) as writer:
        log_evaluation(writer, result, pr_hist)
    report = render_report(result, model_uri, test_uri, model_info, config)
    storage.write_bytes(report_uri, report.encode("utf-8"))
    print(f"evaluate: loss {result.loss:.4f}, accuracy {result.accuracy:.4f} "
          f"(target {config.accuracy_target:.4f}: {'met' if result.meets_target else 'missed'})")
    return result


def check_config(config: EvaluateConfig) -> None:
    """InputError for an accuracy target outside [0, 1] or a batch size below 1."""
    if not 0.0 <= config.accuracy_target <= 1.0:
        raise InputError(f"accuracy_target {config.accuracy_target} is outside [0, 1]; "
                         "pass a fraction such as 0.95")
    if config.batch_size < 1:
        raise InputError(f"batch_size {config.batch_size} must be at least 1")


def load_model(local_dir: str, model_uri: str):  # noqa: ANN201 - keras.Model, lazy import
    """Load ``model.keras`` and ``model.json`` from a model folder; InputError if unreadable."""
    from components.train.model import import_keras  # Keras without scikit-learn: ~0.5 s

    keras = import_keras()

    hint = f"{model_uri} is not a tbpipe model folder; pass the train step's model output"
    try:
        with open(os.path.join(local_dir, MODEL_INFO)) as handle:
            info = json.load(handle)
        model = keras.saving.load_model(os.path.join(local_dir, MODEL_FILE), compile=False)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise InputError(f"{hint} ({type(exc).__name__})") from exc
    if not isinstance(info, dict):
        raise InputError(f"{hint} ({MODEL_INFO} is not a JSON object)")
    return model, info


def check_fits(model, local_test: str, test_uri: str) -> None:
    """InputError unless the model takes the test images and predicts its classes."""
    info = read_info(local_test)
    if not info.num_examples:
        raise InputError(f"{test_uri}: the test dataset is empty; rerun preprocess with data")
    want = tuple(model.input_shape[1:])
    if len(want) != 3 or any(w not in (None, d) for w, d in zip(want, info.image_shape,
                                                                 strict=True)):
        raise InputError(f"{test_uri}: images are {list(info.image_shape)} but the model takes "
                         f"{list(want)}; evaluate with the dataset the model was trained for")
    if model.output_shape[-1] != info.num_classes:
        raise InputError(f"{test_uri}: {info.num_classes} classes but the model predicts "
                         f"{model.output_shape[-1]}; evaluate with the matching dataset")


def _predict_totals(model, local_test: str,
                    batch_size: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Stream the test set through the model: (confusion matrix, summed loss, PR histograms)."""
    info = read_info(local_test)
    k = info.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    pr_hist = np.zeros((k, 2, PR_THRESHOLDS), dtype=np.float64)
    loss_sum, seen = 0.0, 0
    for images, labels in iter_shards(local_test):
        for start in range(0, len(labels), batch_size):
            batch = images[start:start + batch_size].astype(np.float32) / 255.0
            probs = as_probabilities(np.asarray(model.predict_on_batch(batch)))
            truth = labels[start:start + batch_size]
            confusion += confusion_matrix(truth, probs.argmax(axis=1), k)
            pr_hist += pr_histograms(truth, probs)
            loss_sum += float(-np.log(np.clip(probs[np.arange(len(truth)), truth],
                                              _EPSILON, 1.0)).sum())
        seen += len(labels)
        print(f"evaluate: {seen}/{info.num_examples} examples")
    return confusion, loss_sum, pr_hist


def summarize(confusion: np.ndarray, loss_sum: float, accuracy_target: float) -> EvaluateResult:
    """Build the result from the accumulated confusion matrix and summed per-example loss."""
    total = int(confusion.sum())
    accuracy = float(np.trace(confusion)) / total
    scores = class_scores(confusion)
    return EvaluateResult(
        loss=float(loss_sum) / total, accuracy=accuracy, accuracy_target=accuracy_target,
        meets_target=accuracy >= accuracy_target, num_examples=total, per_class=scores,
        macro_precision=float(np.mean([s.precision for s in scores])),
        macro_recall=float(np.mean([s.recall for s in scores])),
        macro_f1=float(np.mean([s.f1 for s in scores])),
        confusion_matrix=[[int(v) for v in row] for row in confusion])


def should_finetune(mode: str, meets_target: bool) -> bool:
    """Whether to fine-tune: ``always``, ``never``, or ``auto`` (only if the target is missed)."""
    if mode not in FINETUNE_MODES:
        raise InputError(f"finetune mode {mode!r} is unknown; "
                         f"use one of {', '.join(FINETUNE_MODES)}")
    return mode == "always" or (mode == "auto" and not meets_target)


def select_best(candidates: list[tuple[str, str, float]]) -> tuple[str, str, float]:
    """Pick the ``(name, model_uri, accuracy)`` with the highest accuracy; ties keep the earlier."""
    if not candidates:
        raise InputError("no candidate models to choose from; pass at least one evaluated model")
    best = candidates[0]
    for candidate in candidates[1:]:
        if candidate[2] > best[2]:
            best = candidate
    return best
