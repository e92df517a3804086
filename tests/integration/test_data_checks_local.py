"""check-data in a local run: --data-checks strict stops a run whose test split leaks."""

import os
import subprocess

import pytest

from tests.helpers import TBPIPE
from tests.reliability.support import frame, write_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_strict_fails_a_run_whose_test_split_copies_training_images(tmp_path):
    table = frame(n=30)
    leaky = write_table(tmp_path / "leaky.csv", table.loc[table.index.repeat(2)])  # each twice
    proc = subprocess.run(
        [*TBPIPE, "run", "--data", leaky, "--data-checks", "strict", "--epochs", "1",
         "--log-root", str(tmp_path / "logs"), "--pipeline-root", str(tmp_path / "kfp"),
         "--experiment", "dc", "--run-name", "s1"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tbpipe: error: step check-data failed:"), proc.stderr[-3000:]
    assert "--data-checks strict:" in last and "test images are exact copies" in last
    assert "Traceback" not in proc.stdout + proc.stderr
    run_dir = tmp_path / "logs" / "dc" / "s1"
    assert {"preprocess", "check-data"} <= set(os.listdir(run_dir))
    assert "train" not in os.listdir(run_dir)  # stopped before training
    reports = tmp_path.glob("kfp/**/check-data/report")
    assert "leaks training data" in next(reports).read_text()  # written before it failed
