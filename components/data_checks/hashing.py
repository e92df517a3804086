"""Exact and perceptual hashes of images, and the nearest hash of one set in another.

Each image gets two 64-bit integers: an exact key (BLAKE2b of its pixel bytes: equal keys,
equal images) and a perceptual hash (imagehash's ``phash``, computed in batches: the signs of
the 8x8 lowest frequencies of the image's 32x32 DCT against their median; a resized,
re-encoded or brightened copy changes few of its bits). Near duplicates are pairs whose
perceptual hashes differ in at most ``max_distance`` bits (Hamming distance).

Finding each query's nearest hash compares every query with every indexed hash, in chunks
of queries: O(q * n) popcounts (numpy's ``bitwise_count``, a few hundred million a second)
in O(n + chunk * n) memory with ``chunk * n`` capped at :data:`CHUNK_CELLS`. The hashes
are 8 bytes per image, so a million training images index in 8 MB.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np

#: Queries x indexed hashes compared at once (32 MB of uint64).
CHUNK_CELLS = 4_000_000
#: The distance reported for a query with nothing to compare with.
NO_MATCH = 65


def exact_keys(images: np.ndarray) -> np.ndarray:
    """One uint64 per image (n, H, W, C) uint8: the first 8 bytes of BLAKE2b of its pixels."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.array([int.from_bytes(hashlib.blake2b(row.data, digest_size=8).digest(), "big")
                     for row in flat], dtype=np.uint64)


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """One uint64 per image (n, H, W, C) uint8: its 64-bit DCT perceptual hash (``phash``).

    The hash of imagehash's ``phash`` (grayscale, resized to 32x32, 2-D DCT-II, the 8x8
    lowest frequencies against their median, row-major bits), computed for a whole batch at
    once: resizing and the DCT are linear, so the 8x8 coefficients are ``A @ X @ B.T`` with
    ``A`` (8, H) and ``B`` (8, W) made once per size (:func:`_projection`). imagehash hashes
    one PIL image at a time (0.3-1.3 ms an image here: minutes for a large data set); this
    is a matrix product per batch of :data:`HASH_BATCH_PIXELS` pixels. Its resize is a
    triangle filter (PIL's bilinear, antialiased) where imagehash's is Lanczos, so the two
    hashes may differ in a few bits; ``tests/unit/test_data_checks.py`` compares them.
    """
    images = np.asarray(images)
    n, height, width, channels = images.shape
    rows, cols = _projection(height), _projection(width)
    out = np.empty(n, dtype=np.uint64)
    step = max(1, HASH_BATCH_PIXELS // (height * width))
    for start in range(0, n, step):
        batch = images[start:start + step].astype(np.float32)
        gray = batch[..., 0] if channels == 1 else batch[..., :3] @ _LUMA
        coeffs = rows @ gray @ cols.T  # (batch, 8, 8)
        flat = coeffs.reshape(len(batch), -1)
        bits = flat > np.median(flat, axis=1, keepdims=True)
        out[start:start + step] = np.packbits(bits, axis=1).view(">u8")[:, 0]
    return out


#: Pixels (per channel) hashed at once: a float32 copy of 4M pixels a channel is 16 MB
#: (5,000 28x28 images, 80 224x224 ones).
HASH_BATCH_PIXELS = 4_000_000
#: PIL's ``convert("L")``: ITU-R 601-2 luma.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_RESIZED, _LOW = 32, 8  # imagehash's phash: hash_size 8, highfreq_factor 4


@functools.cache
def _projection(size: int) -> np.ndarray:
    """(8, size) float32: a side of ``size`` pixels resized to 32, then the 8 lowest DCT-II rows.

    The resize is a triangle filter whose support widens with the scale when shrinking
    (PIL's antialiased bilinear); the DCT is scipy's type II, unnormalised (a common scale
    changes no sign against the median).
    """
    scale = size / _RESIZED
    support = max(scale, 1.0)
    centres = (np.arange(_RESIZED) + 0.5) * scale
    source = np.arange(size) + 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(source[None, :] - centres[:, None]) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    k, x = np.arange(_LOW)[:, None], np.arange(_RESIZED)[None, :]
    dct = 2.0 * np.cos(np.pi * k * (2 * x + 1) / (2 * _RESIZED))
    return (dct @ weights).astype(np.float32)


def nearest(queries: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the smallest Hamming distance to a hash of ``index``, and where.

    Returns ``(distance, position)``, both int64 of the queries' length; with an empty
    index, every distance is :data:`NO_MATCH` and every position -1.
    """
    queries = np.asarray(queries, dtype=np.uint64)
    index = np.asarray(index, dtype=np.uint64)
    distance = np.full(len(queries), NO_MATCH, dtype=np.int64)
    position = np.full(len(queries), -1, dtype=np.int64)
    if not len(index):
        return distance, position
    chunk = max(1, CHUNK_CELLS // len(index))
    for start in range(0, len(queries), chunk):
        block = np.bitwise_count(queries[start:start + chunk, None] ^ index[None, :])
        position[start:start + chunk] = block.argmin(axis=1)
        distance[start:start + chunk] = block.min(axis=1)
    return distance, position


def matches(query_keys: np.ndarray, query_hashes: np.ndarray, index_keys: np.ndarray,
            index_hashes: np.ndarray, max_distance: int | None,
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which queries are exact copies of an indexed image, and which near copies.

    Args:
        query_keys: The queries' exact keys (:func:`exact_keys`).
        query_hashes: Their perceptual hashes (:func:`perceptual_hashes`).
        index_keys: The indexed images' exact keys.
        index_hashes: Their perceptual hashes.
        max_distance: Near: at most this many bits apart; None: exact copies only.

    Returns:
        ``(exact, near, distance, position)``: boolean masks over the queries (a query is
        one or the other, not both), each query's distance to its nearest indexed hash and
        that hash's position in the index.

    """
    exact = np.isin(np.asarray(query_keys, np.uint64), np.asarray(index_keys, np.uint64))
    distance, position = nearest(query_hashes, index_hashes)
    if max_distance is None:
        return exact, np.zeros_like(exact), distance, position
    return exact, ~exact & (distance <= max_distance), distance, position
