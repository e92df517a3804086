
"""The preprocess KFP wrapper, called through python_func with real artifact objects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Metrics

from tbpipe.components import preprocess
from tbpipe.components.common.dataset import read_info
from tbpipe.components.preprocessing.core import STEP
from tests.helpers import read_scalars
from tests.unit.test_readers import table_data, write_csv


def artifacts(tmp_path: Path) -> dict:
    return {
        "train_data": Dataset(uri=str(tmp_path / "train")),
        "val_data": Dataset(uri=str(tmp_path / "val")),
        "test_data": Dataset(uri=str(tmp_path / "test")),
        "stats": Metrics(uri=str(tmp_path / "stats")),
    }


def test_preprocess_component_writes_datasets_metadata_metrics_and_logs(tmp_path: Path) -> None:
    pixels, labels = table_data(n=30, classes=3)
    data = write_csv(tmp_path / "table.csv", pixels, labels)
    outputs = artifacts(tmp_path)
    preprocess.python_func(data=data, **outputs, log_root=str(tmp_path / "logs"),
                           experiment="exp", run_name="", job_name="job-1",
                           val_fraction=0.2, test_fraction=0.1, seed=3)
    for split in ("train", "val", "test"):
        artifact = outputs[f"{split}_data"]
        info = read_info(artifact.path)
        assert artifact.metadata == {"num_examples": info.num_examples,
                                     "image_shape": [4, 4, 1], "num_classes": 3}
    # 10 rows per class: 2 val (0.2) and 1 test (0.1) each.
    assert outputs["val_data"].metadata["num_examples"] == 6
    assert outputs["test_data"].metadata["num_examples"] == 3
    metrics = outputs["stats"].metadata
    assert metrics["rows_read"] == 30.0 and metrics["train_examples"] == 21.0
    assert {"pixel_mean", "pixel_std", "num_classes"} <= set(metrics)
    scalars = read_scalars(str(tmp_path / "logs" / "exp" / "job-1" / STEP))
    assert scalars["data/num_examples/train"] == [(0, 21.0)]


def test_preprocess_component_reports_bad_input(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        preprocess.python_func(data=str(tmp_path / "missing.parquet"), **artifacts(tmp_path),
                               log_root=str(tmp_path / "logs"), experiment="exp",
                               run_name="r1", job_name="job")
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert re.search(r"preprocess: error: .*missing\.parquet: no such file", err[0])
    assert not (tmp_path / "train").exists()
