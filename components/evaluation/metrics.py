"""Evaluation metrics from running sums: confusion matrix, per-class scores, PR curves.

Plain numpy on batches, so the test set streams through :mod:`tbpipe.components.evaluation.core` in
bounded memory and the sums give the same figures as on the whole set.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PR_THRESHOLDS = 127
_EPSILON = 1e-7


@dataclasses.dataclass(frozen=True)
class ClassScores:
    """Precision, recall and F1 of one class, and how many test examples it has."""

    label: int
    precision: float
    recall: float
    f1: float
    support: int


def non_finite_rows(outputs: np.ndarray) -> int:
    """How many rows (examples) of a model's outputs hold a NaN or an infinity."""
    outputs = np.asarray(outputs)
    if outputs.dtype.kind != "f":
        return 0
    return int((~np.isfinite(outputs.reshape(len(outputs), -1))).any(axis=1).sum())


def as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Model outputs as class probabilities: kept if rows already sum to 1, else softmaxed."""
    outputs = outputs.astype(np.float64)
    if outputs.min() >= 0.0 and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Count ``[true, predicted]`` pairs into a ``(num_classes, num_classes)`` int64 array."""
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, -1)


def class_scores(confusion: np.ndarray) -> tuple[ClassScores, ...]:
    """Per-class precision, recall and F1 from a confusion matrix, by scikit-learn.

    0 where undefined. Each non-empty cell ``[true, predicted]`` is one weighted sample,
    so memory is the matrix's (``num_classes**2`` cells), never the test set's.
    """
    from sklearn.metrics import precision_recall_fscore_support

    confusion = np.asarray(confusion, dtype=np.int64)
    k = len(confusion)
    truth, predicted = np.divmod(np.arange(k * k), k)
    weights = confusion.reshape(-1)
    cells = weights > 0  # the cells that hold examples: at most one sample per example
    if not cells.any():
        precision = recall = f1 = np.zeros(k)
    else:
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth[cells], predicted[cells], labels=np.arange(k), average=None,
            sample_weight=weights[cells], zero_division=0)
    support = confusion.sum(axis=1)
    return tuple(ClassScores(label, float(precision[label]), float(recall[label]),
                             float(f1[label]), int(support[label])) for label in range(k))


def most_confused(confusion: np.ndarray, limit: int = 10) -> list[tuple[int, int, int]]:
    """The ``limit`` largest off-diagonal cells: ``(true, predicted, count)``, most first.

    Ties go to the lower true class, then the lower predicted class; empty cells are left out.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    flat = off.reshape(-1)
    order = np.lexsort((np.arange(flat.size), -flat))[:limit]
    k = len(confusion)
    return [(int(i // k), int(i % k), int(flat[i])) for i in order if flat[i] > 0]


def pr_histograms(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per class, histograms of its probability over positives and negatives: ``(k, 2, T)``.

    Summed over batches they give the same PR curve as tensorboardX's ``add_pr_curve`` on
    the whole set (see :func:`pr_curve`).
    """
    buckets = np.floor(probs * (PR_THRESHOLDS - 1)).astype(np.int32)
    out = np.zeros((probs.shape[1], 2, PR_THRESHOLDS), dtype=np.float64)
    for k in range(probs.shape[1]):
        positive = labels == k
        for row, mask in ((0, positive), (1, ~positive)):
            out[k, row] = np.histogram(buckets[mask, k], bins=PR_THRESHOLDS,
                                       range=(0, PR_THRESHOLDS - 1))[0]
    return out


def pr_curve(histograms: np.ndarray) -> np.ndarray:
    """One class's ``(2, T)`` histograms as ``(6, T)``: tp, fp, tn, fn, precision, recall."""
    tp = np.cumsum(histograms[0][::-1])[::-1]
    fp = np.cumsum(histograms[1][::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / np.maximum(_EPSILON, tp + fp)
    recall = tp / np.maximum(_EPSILON, tp + fn)
    return np.stack((tp, fp, tn, fn, precision, recall))
