"""Exact and perceptual hashes of images, and the nearest hash of one set in another.

Each image gets two 64-bit integers: an exact key (BLAKE2b of its pixel bytes: equal keys,
equal images) and a perceptual hash (imagehash's ``phash``: the signs of the 8x8 lowest
frequencies of the image's 32x32 DCT against their median; a resized, re-encoded or
brightened copy changes few of its bits). Near duplicates are pairs whose perceptual hashes
differ in at most ``max_distance`` bits (Hamming distance).

Finding each query's nearest hash compares every query with every indexed hash, in chunks
of queries: O(q * n) popcounts (numpy's ``bitwise_count``, a few hundred million a second)
in O(n + chunk * n) memory with ``chunk * n`` capped at :data:`CHUNK_CELLS`. The hashes
are 8 bytes per image, so a million training images index in 8 MB.
"""

from __future__ import annotations

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
    """One uint64 per image (n, H, W, C) uint8: imagehash's 64-bit ``phash`` of it.

    Colour images are hashed in grayscale (imagehash converts them to ``L``), as a copy
    may differ in colour balance.
    """
    import imagehash
    from PIL import Image

    out = np.empty(len(images), dtype=np.uint64)
    for k, image in enumerate(images):
        picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        bits = imagehash.phash(picture, hash_size=8).hash.reshape(-1)
        out[k] = np.packbits(bits).view(">u8")[0]
    return out


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
            index_hashes: np.ndarray, max_distance: int | None) -> tuple[np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """Which queries are exact copies of an indexed image, and which near copies.

    Args:
        query_keys: The queries' exact keys (:func:`exact_keys`).
        query_hashes: Their perceptual hashes (:func:`perceptual_hashes`).
        index_keys: The indexed images' exact keys.
        index_hashes: Their perceptual hashes.
        max_distance: Near: at most this many bits apart; None: exact copies only.

    Returns:
        ``(exact, near, distance)``: boolean masks over the queries (a query is one or the
        other, not both) and each query's distance to its nearest indexed hash.

    """
    exact = np.isin(np.asarray(query_keys, np.uint64), np.asarray(index_keys, np.uint64))
    distance, _ = nearest(query_hashes, index_hashes)
    if max_distance is None:
        return exact, np.zeros_like(exact), distance
    return exact, ~exact & (distance <= max_distance), distance
