"""Evaluate a trained model on a test Dataset: metrics, TensorBoard summaries, a report.

The test set is streamed shard by shard and batch by batch; only running sums are kept (the
confusion matrix, the summed loss and per-class score histograms for the PR curves) and the
thumbnails of at most ``MAX_MISTAKES`` misclassified images, so memory stays bounded whatever
the size of the test set.
"""

from __future__ import annotations

import numpy as np

from tbpipe.components.common import storage
from tbpipe.components.common.dataset import iter_shards, read_info
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.model_format import (
    MODEL_FILE,
    check_class_names,
    class_names,
    load_keras_file,
    read_model_meta,
)
from tbpipe.components.common.tensorboard.writer import open_writer
from tbpipe.components.evaluation.config import EvaluateConfig, EvaluateResult
from tbpipe.components.evaluation.metrics import (
    _EPSILON,
    PR_THRESHOLDS,
    as_probabilities,
    class_scores,
    confusion_matrix,
    non_finite_rows,
    pr_histograms,
)
from tbpipe.components.evaluation.misclassified import MistakeSample
from tbpipe.components.evaluation.report import (
    log_evaluation,
    log_mistakes,
    render_html_report,
    render_report,
)


class NonFiniteOutputs(InputError):
    """A model whose outputs are NaN or infinite: broken, never scored as a success."""


def evaluate_model(model_uri: str, test_uri: str, report_uri: str, log_dir: str,
                   config: EvaluateConfig, html_report_uri: str = "") -> EvaluateResult:
    """Evaluate the model folder at ``model_uri`` on the Dataset at ``test_uri``.

    Logs ``eval/*`` scalars, the confusion matrix (image and text), per-class PR curves and
    the most confident mistakes (``eval/misclassified``, an image grid) to ``log_dir``, and
    writes a Markdown report to ``report_uri`` and, given ``html_report_uri``, a
    self-contained HTML report there (per-class scores, the most confused pairs, thumbnails
    of the misclassified images).

    Raises:
        InputError: A bad target or batch size, a folder that is not a model, or a model
            whose input shape, class count or class names do not fit the test data.

    """
    with storage.local_input(test_uri) as local_test:
        # the names the model was trained with are the test data's (as finetune and promote
        # check them), compared before the larger model.keras loads
        model_info = read_model_meta(model_uri)
        check_class_names(model_uri, model_info.get("class_names"),
                          read_info(local_test).class_names,
                          "evaluate with the test data of the model's own classes")
        model = load_keras_file(storage.join(model_uri, MODEL_FILE), compile=False)
        mistakes = MistakeSample()
        result, pr_hist = score_model(model, model_info, local_test, test_uri, config,
                                      model_uri=model_uri, mistakes=mistakes)
    with open_writer(log_dir) as writer:
        log_evaluation(writer, result, pr_hist)
        log_mistakes(writer, mistakes.mistakes(), mistakes.total, result.names)
    report = render_report(result, model_uri, test_uri, model_info, config)
    storage.write_bytes(report_uri, report.encode("utf-8"))
    if html_report_uri:
        page = render_html_report(result, mistakes.mistakes(), mistakes.total, model_uri,
                                  test_uri, model_info, config)
        storage.write_bytes(html_report_uri, page.encode("utf-8"))
    print(f"evaluate: loss {result.loss:.4f}, accuracy {result.accuracy:.4f} "
          f"(target {config.accuracy_target:.4f}: {'met' if result.meets_target else 'missed'})")
    return result


def score_model(model, model_info: dict, local_test: str, test_uri: str,
                config: EvaluateConfig, model_uri: str = "the model",
                mistakes: MistakeSample | None = None) -> tuple[EvaluateResult, np.ndarray]:
    """Score a loaded model on a local test Dataset: the result and its PR histograms.

    The one scoring of tbpipe (evaluate, and promote for the baseline and the new model).
    ``mistakes``, if given, sees every batch and keeps its misclassified thumbnails.

    Raises:
        InputError: the model does not take the test images or predict its classes, or
            its outputs are not finite (a broken model is never scored as a success; the
            line names ``model_uri``).

    """
    check_fits(model, local_test, test_uri)
    confusion, loss_sum, pr_hist = _predict_totals(model, local_test, config.batch_size,
                                                   model_uri, mistakes)
    names = class_names_for(local_test, model_info)
    return summarize(confusion, loss_sum, config.accuracy_target, names), pr_hist


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


def class_names_for(local_test: str, model_info: dict) -> tuple[str, ...]:
    """The test Dataset's class names; where its manifest names none, ``model.json``'s.

    A manifest without names reads as ``"0".."k-1"`` (common/dataset.py); then the names
    the model was trained with, if it records them, else those indices.
    """
    info = read_info(local_test)
    if info.class_names != tuple(str(k) for k in range(info.num_classes)):
        return info.class_names
    return tuple(class_names(model_info, info.num_classes))


def _predict_totals(model, local_test: str, batch_size: int, model_uri: str,
                    mistakes: MistakeSample | None = None,
                    ) -> tuple[np.ndarray, float, np.ndarray]:
    """Stream the test set through the model: (confusion matrix, summed loss, PR histograms).

    ``mistakes`` (if any) is shown each batch's images, labels and probabilities.

    The first batch with a NaN or infinite output is an InputError naming ``model_uri``.
    """
    info = read_info(local_test)
    k = info.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    pr_hist = np.zeros((k, 2, PR_THRESHOLDS), dtype=np.float64)
    loss_sum, seen = 0.0, 0
    for images, labels in iter_shards(local_test):
        for start in range(0, len(labels), batch_size):
            batch = images[start:start + batch_size].astype(np.float32) / 255.0
            outputs = np.asarray(model.predict_on_batch(batch))
            bad = non_finite_rows(outputs)
            if bad:
                raise NonFiniteOutputs(
                    f"{model_uri}: the model's outputs are NaN or infinite for {bad} of "
                    f"{len(batch)} test images (examples {seen + start + 1}-"
                    f"{seen + start + len(batch)}); the model is broken (its training "
                    "diverged?): retrain it, e.g. with a lower learning rate")
            probs = as_probabilities(outputs)
            truth = labels[start:start + batch_size]
            confusion += confusion_matrix(truth, probs.argmax(axis=1), k)
            pr_hist += pr_histograms(truth, probs)
            if mistakes is not None:
                mistakes.add(images[start:start + batch_size], truth, probs, seen + start)
            loss_sum += float(-np.log(np.clip(probs[np.arange(len(truth)), truth],
                                              _EPSILON, 1.0)).sum())
        seen += len(labels)
        print(f"evaluate: {seen}/{info.num_examples} examples")
    return confusion, loss_sum, pr_hist


def summarize(confusion: np.ndarray, loss_sum: float, accuracy_target: float,
              class_names: tuple[str, ...] = ()) -> EvaluateResult:
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
        confusion_matrix=[[int(v) for v in row] for row in confusion],
        class_names=tuple(class_names))
