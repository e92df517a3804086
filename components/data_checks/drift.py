"""Drift between two samples of images: an MMD permutation test and per-channel statistics.

The samples are embedded by the champion model's penultimate layer (what its last layer
reads), so drift is measured in the features the model decides on. The test statistic is
the (biased) squared maximum mean discrepancy with a Gaussian kernel whose width is the
median distance between the pooled embeddings; its p-value is the share of random
relabellings of the pooled sample whose statistic is at least as large (with the usual +1
on both sides, so it is never 0). With ``n`` embeddings in all and ``P`` permutations, the
kernel takes O(n^2) memory (n = 1000: 8 MB) and the test O(n^2 * P) time as one matrix
product.
"""

from __future__ import annotations

import numpy as np


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int,
                         seed: int) -> tuple[float, float]:
    """``(mmd^2, p_value)`` of samples ``x`` (n, d) and ``y`` (m, d); seeded, reproducible."""
    pooled = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1),
                             np.asarray(y, np.float64).reshape(len(y), -1)])
    n, m = len(x), len(y)
    squares = np.einsum("ij,ij->i", pooled, pooled)
    dist2 = np.maximum(squares[:, None] + squares[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    off_diagonal = dist2[np.triu_indices(len(pooled), k=1)]
    width2 = float(np.median(off_diagonal)) if off_diagonal.size else 1.0
    kernel = np.exp(-dist2 / (width2 if width2 > 0 else 1.0))
    signs = np.concatenate([np.full(n, 1.0 / n), np.full(m, -1.0 / m)])
    observed = float(signs @ kernel @ signs)
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(signs) for _ in range(permutations)], axis=1)
    null = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)
    p_value = (1.0 + float(np.sum(null >= observed - 1e-12))) / (1.0 + permutations)
    return max(observed, 0.0), p_value


def penultimate_embeddings(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:  # noqa: ANN001
    """What the model's last layer reads, for uint8 images (n, H, W, C) scaled as evaluate does.

    The last layer is the output layer (softmax over the classes); its input is the
    penultimate layer's output, flattened to (n, d).
    """
    from tbpipe.components.common.keras_import import import_keras

    keras = import_keras()
    last = model.layers[-1]
    features = keras.Model(inputs=model.inputs, outputs=last.input)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].astype(np.float32) / 255.0
        out.append(np.asarray(features.predict_on_batch(batch), np.float64).reshape(
            len(batch), -1))
    return np.concatenate(out) if out else np.zeros((0, 1))


class ChannelStats:
    """Per-channel mean and standard deviation of pixel values in [0, 1], summed as it goes."""

    def __init__(self, channels: int) -> None:
        self.total = np.zeros(channels, np.float64)
        self.squares = np.zeros(channels, np.float64)
        self.count = 0

    def add(self, images: np.ndarray) -> None:
        """Add images (n, H, W, C) uint8."""
        values = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        self.total += values.sum(axis=0)
        self.squares += np.square(values).sum(axis=0)
        self.count += len(values)

    def mean(self) -> np.ndarray:
        """Each channel's mean (0 before any image)."""
        return self.total / max(self.count, 1)

    def std(self) -> np.ndarray:
        """Each channel's standard deviation."""
        mean = self.mean()
        return np.sqrt(np.maximum(self.squares / max(self.count, 1) - mean * mean, 0.0))
