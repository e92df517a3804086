"""The check-data step's cost: hashing per image, the nearest-hash search, the drift test.

    python -m benchmarks.bench_data_checks [--train 20000] [--test 4000] [--full]

On generated MNIST-like 28x28 images (``common.mnist_like``), in one process:

- hashing: the step's batched perceptual hash (``hashing.perceptual_hashes``) against
  imagehash's ``phash`` one image at a time (the baseline, the library's way), and the exact
  key (BLAKE2b of the pixels), per image and as ratios;
- the nearest-hash search (``hashing.nearest``: chunked XOR and popcount) for ``--test``
  queries against ``--train`` hashes: comparisons per second, and its time against one
  unchunked ``test x train`` matrix where that fits in memory (the ratio shows the chunking
  costs little), and the chunk's memory against the unchunked matrix's;
- the drift test (``drift.mmd_permutation_test``) on 500 + 500 embeddings of 128 values,
  200 permutations, as the step runs it.

``--full`` uses MNIST's own sizes (60,000 train, 10,000 test): the search then has 600
million pairs and no unchunked baseline (4.8 GB).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import mnist_like, ratio
from benchmarks.report import Report, fmt, main_for

FLAGS = {
    "--train": (20_000, "training images (hashes indexed)"),
    "--test": (4_000, "test images (queries)"),
    "--hash-sample": (2_000, "images hashed to time the hashing"),
    "--full": (False, "MNIST's sizes: 60,000 train, 10,000 test"),
}
UNCHUNKED_LIMIT = 200_000_000  # pairs: 1.6 GB of uint64, the most the baseline may take


def _timed(work) -> tuple[object, float]:  # noqa: ANN001
    began = time.perf_counter()
    out = work()
    return out, time.perf_counter() - began


def run(args) -> Report:  # noqa: ANN001
    from tbpipe.components.data_checks.drift import mmd_permutation_test
    from tbpipe.components.data_checks.hashing import (
        CHUNK_CELLS,
        exact_keys,
        nearest,
        perceptual_hashes,
    )

    n_train, n_test = (60_000, 10_000) if args.full else (args.train, args.test)
    images, _ = mnist_like(args.hash_sample, seed=1)
    images = images[..., None]
    import imagehash
    from PIL import Image

    def one_by_one():  # noqa: ANN202
        return [imagehash.phash(Image.fromarray(image[..., 0])) for image in images]

    perceptual_hashes(images[:10])
    one_by_one()  # imports, caches
    _, phash_s = _timed(lambda: perceptual_hashes(images))
    _, library_s = _timed(one_by_one)
    _, exact_s = _timed(lambda: exact_keys(images))
    per_phash, per_exact = 1e6 * phash_s / len(images), 1e6 * exact_s / len(images)
    per_library = 1e6 * library_s / len(images)

    rng = np.random.default_rng(0)
    index = rng.integers(0, 2**63, n_train, dtype=np.uint64)
    queries = rng.integers(0, 2**63, n_test, dtype=np.uint64)
    (distance, _), chunked_s = _timed(lambda: nearest(queries, index))
    rows = [["phash, batched (check-data)", f"{fmt(per_phash, 1)} µs/image",
             f"x{ratio(per_library, per_phash):.0f} faster than imagehash"],
            ["phash, imagehash one image at a time", f"{fmt(per_library, 1)} µs/image",
             "baseline"],
            ["exact key (BLAKE2b)", f"{fmt(per_exact, 1)} µs/image",
             f"batched phash x{ratio(per_phash, per_exact):.1f} its time"],
            [f"nearest: {n_test:,} x {n_train:,}",
             f"{fmt(chunked_s, 2)} s ({fmt(n_test * n_train / chunked_s / 1e6)} M pairs/s)",
             f"chunk {CHUNK_CELLS * 8 / 2**20:.0f} MB"]]
    report = Report("bench_data_checks", "check-data: hashing, nearest hash, drift test",
                    ["what", "time", "against"], rows)
    if n_test * n_train <= UNCHUNKED_LIMIT:
        def unchunked():  # noqa: ANN202
            block = np.bitwise_count(queries[:, None] ^ index[None, :])
            return block.min(axis=1)

        whole, whole_s = _timed(unchunked)
        assert (whole == distance).all()
        rows.append([f"nearest, one {n_test:,} x {n_train:,} matrix", f"{fmt(whole_s, 2)} s",
                     f"chunked x{ratio(chunked_s, whole_s):.2f} its time, "
                     f"{n_test * n_train * 8 / 2**20:.0f} MB vs "
                     f"{CHUNK_CELLS * 8 / 2**20:.0f} MB"])
        report.headline["chunked_time_ratio"] = round(ratio(chunked_s, whole_s), 2)
    x = rng.normal(size=(500, 128))
    y = rng.normal(size=(500, 128))
    (_, p_value), mmd_s = _timed(lambda: mmd_permutation_test(x, y, 200, 0))
    rows.append(["MMD test, 500 + 500 x 128, 200 permutations", f"{fmt(mmd_s, 2)} s",
                 f"p {p_value:.2f} (same distribution)"])
    report.headline.update({"phash_us": round(per_phash, 1),
                            "phash_speedup_vs_imagehash": round(ratio(per_library, per_phash)),
                            "phash_vs_exact": round(ratio(per_phash, per_exact), 1),
                            "nearest_mpairs_per_s": round(n_test * n_train / chunked_s / 1e6),
                            "mmd_s": round(mmd_s, 2)})
    report.notes.append("Hashing is linear in the images; the nearest-hash search is "
                        "O(test x train) time in O(train + chunk) memory.")
    return report


if __name__ == "__main__":
    raise SystemExit(main_for("bench_data_checks", __doc__, FLAGS, run))
