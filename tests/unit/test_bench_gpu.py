"""``benchmarks.bench_gpu`` runs on a machine without a GPU too (a GPU is lent only at times).

The same script measured the H200 figures in docs/performance.md on Keras' JAX backend; here
it runs on the TensorFlow backend at toy sizes, so a change that breaks it shows up in CI.
"""

from __future__ import annotations

import pytest

from tests.helpers import run_benchmark


@pytest.mark.slow
def test_gpu_benchmark_reports_every_table_on_the_cpu(tmp_path):
    report = run_benchmark("bench_gpu", [
        "--samples", "384", "--val-samples", "64", "--epochs", "2", "--rounds", "1",
        "--batch-sizes", "64", "--precisions", "float32", "--steps-per-execution", "1,4",
        "--logging-batch", "64"], tmp_path)
    assert report["headline"]["device"] == "cpu"
    assert report["headline"]["backend"] == "tensorflow"
    assert [row[:2] for row in report["rows"]] == [["float32", 64]]
    assert [t["title"].split(" ")[0] for t in report["extra_tables"]] == [
        "Logging", "mixed_float16", "steps_per_execution"]
    logging = report["headline"]["logging"]
    assert len(logging) == 7 and "no logging" in logging
    tbpipe = {arm: row for arm, row in logging.items() if arm.startswith("tbpipe")}
    assert len(tbpipe) == 5
    for arm, (_, _, share) in tbpipe.items():
        assert float(share.rstrip("%")) > 0, arm  # the hooks and the writer thread did work
