"""Variants of the bare training loop for benchmark 1: batch size, XLA, precision, oneDNN, threads.

Batch size, ``steps_per_execution`` and XLA are compile/fit options, measured in the
benchmark's process; oneDNN and thread settings apply when TensorFlow starts, so each of those
runs in a fresh process (``python -m benchmarks.train_variants NAME SAMPLES PRECISION``).
"""

from __future__ import annotations

import json
import sys
import tempfile

from benchmarks.common import progress, ratio
from benchmarks.fit_arms import Arms, steady
from benchmarks.report import fmt, in_fresh_process

VARIANT_HEADER = ["variant", "samples/s", "vs default", "samples/CPU-s", "vs default (CPU)"]
ENV_VARIANTS = {
    "default": ({}, None),
    "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, None),
    "threads intra 1 / inter 1": ({}, (1, 1)),
}


def variant_row(name: str, rates: tuple[float, float],
                base: tuple[float, float]) -> list[object]:
    """A table row: samples per wall and CPU second, and their ratios to the default's."""
    return [name, fmt(rates[0]), f"{ratio(rates[0], base[0]):.2f}", fmt(rates[1]),
            f"{ratio(rates[1], base[1]):.2f}"]


def variant_rows(arms: Arms, samples: int, precision: str) -> list[list[object]]:
    """The bare loop with XLA, other batch sizes and the other precision, same process."""
    other = "float32" if precision == "mixed_bfloat16" else "mixed_bfloat16"
    variants = [("default (batch 128)", {}, 128), ("batch 256", {}, 256), ("batch 512", {}, 512),
                ("batch 32 (the pipeline's default)", {}, 32),
                ("batch 32, steps_per_execution=8", {"steps_per_execution": 8}, 32),
                ("jit_compile=True (XLA)", {"jit_compile": True}, 128),
                (f"{other} (batch 128)", {"precision": other}, 128),
                ("default again (the noise between two runs)", {}, 128)]
    base, rows = (0.0, 0.0), []
    for name, options, batch in variants:
        progress(f"train: variant {name}")
        clock, _, _ = arms.bare(batch, 3, samples, **{"precision": precision, **options})
        rates = steady([clock], samples)
        base = base if base[0] else rates
        rows.append(variant_row(name, rates, base))
    return rows


def env_variant_rows(samples: int, precision: str) -> list[list[object]]:
    """oneDNN and thread settings, each in a fresh process (they apply at TF start-up)."""
    rows, base = [], None
    for name, (env, _) in ENV_VARIANTS.items():
        progress(f"train: process variant {name}")
        rates = in_fresh_process("train_variants", [name, str(samples), precision], **env)["rates"]
        base = base or rates
        rows.append(variant_row(name, rates, base))
    return rows


def child(name: str, samples: int, precision: str) -> None:
    """In a fresh process: apply a setting, time epochs 2-3 of the bare loop, print JSON."""
    import tensorflow as tf

    threads = ENV_VARIANTS[name][1]
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-") as root:
        arms = Arms(root, samples, 500)
        clock, _, _ = arms.bare(128, 3, precision=precision)
    print(json.dumps({"rates": steady([clock], samples)}))


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), sys.argv[3])
