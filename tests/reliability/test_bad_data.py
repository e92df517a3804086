"""Bad data: one clear line naming the input and what to do, exit 1, nothing half-written.

Every case of support.DATA_CASES runs twice: through the preprocess component's wrapper
(``python_func`` with real artifacts, a previous run's output in place) and through the CLI
(``python -m tbpipe.pipelines.cli.main run --data ...``, the whole pipeline on kfp.local).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from kfp.dsl import Dataset, Metrics

from tbpipe.components import preprocess
from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError
from tbpipe.components.preprocessing.config import PreprocessConfig
from tbpipe.components.preprocessing.core import preprocess_data
from tests.helpers import write_dataset
from tests.reliability.support import (
    DATA_CASES,
    cli,
    forbidding_storage,
    frame,
    logged_files,
    one_error_line,
    tree_digest,
    whole_outputs,
    write_table,
)

WHERE = dict(experiment="exp", run_name="r1", job_name="job")


def outputs(root: Path) -> dict:
    return {"train_data": Dataset(uri=str(root / "train")),
            "val_data": Dataset(uri=str(root / "val")),
            "test_data": Dataset(uri=str(root / "test")),
            "stats": Metrics(uri=str(root / "stats"))}


def fails_in_component(data: str, root: Path, capsys) -> str:
    """Run preprocess on ``data`` over a previous run's output; return its one error line."""
    write_dataset(str(root / "out" / "train"), n=8)  # what an earlier attempt left, whole
    before = tree_digest(root / "out" / "train")
    with pytest.raises(SystemExit) as exit_info:
        preprocess.python_func(data=data, **outputs(root / "out"),
                               log_root=str(root / "logs"), **WHERE)
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    line = one_error_line(captured.err, r"^tbpipe: preprocess: error: ")
    assert tree_digest(root / "out" / "train") == before  # the earlier output is intact
    assert whole_outputs(root / "out") == ["train/dataset.json"]  # and nothing else appeared
    assert logged_files(root / "logs") == []
    return line


def fails_in_cli(data: str, root: Path, *needles: str, env: dict | None = None) -> str:
    proc = cli("run", "--data", data, "--epochs", "1", "--log-root", str(root / "logs"),
               "--pipeline-root", str(root / "kfp"), "--run-name", "r1", env=env)
    line = one_error_line(proc, *needles, code=1)
    assert whole_outputs(root / "kfp") == []
    return line


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_component_reports_bad_data_in_one_line(name, tmp_path, capsys):
    case = DATA_CASES[name]
    uri = case.build(tmp_path / "in")
    line = fails_in_component(uri, tmp_path, capsys)
    for needle in (re.escape(uri), *case.needles):
        assert re.search(needle, line), (needle, line)


@pytest.mark.parametrize("name", sorted(DATA_CASES))
def test_cli_reports_bad_data_in_one_line(name, tmp_path):
    case = DATA_CASES[name]
    uri = case.build(tmp_path / "in")
    fails_in_cli(uri, tmp_path, r"^tbpipe: error: ", re.escape(uri), *case.needles)


def test_cli_reports_missing_finetune_data_before_running(tmp_path):
    missing = str(tmp_path / "nowhere.parquet")
    proc = cli("run", "--finetune-data", missing, "--log-root", str(tmp_path / "logs"),
               "--pipeline-root", str(tmp_path / "kfp"))
    one_error_line(proc, rf"--finetune-data {re.escape(missing)}: no such file",
                   r"pass a CSV or Parquet table", code=1)
    assert not (tmp_path / "kfp").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file whatever its mode; the "
                    "'a-folder-where-a-table-is-expected' case covers an unreadable input")
def test_component_reports_an_unreadable_file(tmp_path, capsys):
    path = Path(write_table(tmp_path / "in" / "locked.csv", frame()))
    path.chmod(0)
    line = fails_in_component(str(path), tmp_path, capsys)
    assert re.search(rf"{re.escape(str(path))}: not a readable CSV table \(.*Permission", line)


def test_a_shape_given_fits_a_non_square_table(tmp_path):
    """The not-a-square case is an error only while no image_shape says otherwise."""
    uri = DATA_CASES["not-a-square"].build(tmp_path / "in")
    result = preprocess_data(uri, *(str(tmp_path / s) for s in ("tr", "va", "te")), None,
                             PreprocessConfig(image_shape=(3, 5, 1)))
    assert result.image_shape == (3, 5, 1) and result.train.num_examples > 0


def test_one_negative_label_is_refused_not_dropped(tmp_path):
    """A label that is not a class number means the table is not what it seems: refused."""
    table = frame(n=30)
    table.loc[17, "label"] = -1
    with pytest.raises(InputError, match=r"t\.csv: label -1 \(row 18, column 'label'\) is "
                                         r"not a class number"):
        preprocess_data(write_table(tmp_path / "t.csv", table),
                        *(str(tmp_path / s) for s in ("tr", "va", "te")), None,
                        PreprocessConfig())
    assert not any((tmp_path / s).exists() for s in ("tr", "va", "te"))


@pytest.mark.gcs
def test_missing_bucket_is_one_line(gcs_emulator, tmp_path, capsys):
    uri = "gs://no-such-bucket-tbpipe/data/table.csv"
    needles = (re.escape(uri), r"not found; check that bucket 'no-such-bucket-tbpipe' exists")
    line = fails_in_component(uri, tmp_path, capsys)
    for needle in needles:
        assert re.search(needle, line), (needle, line)
    fails_in_cli(uri, tmp_path / "cli", r"^tbpipe: error: ", *needles)


@pytest.mark.gcs
def test_no_permission_is_one_line(tmp_path, capsys, monkeypatch):
    uri = "gs://locked-bucket/data/table.csv"
    needles = (re.escape(uri), r"permission denied \(403\)",
               r"grant the step's service account access")
    with forbidding_storage() as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        storage.reset_filesystems()
        try:
            line = fails_in_component(uri, tmp_path, capsys)
        finally:
            monkeypatch.undo()
            storage.reset_filesystems()
        for needle in needles:
            assert re.search(needle, line), (needle, line)
        fails_in_cli(uri, tmp_path / "cli", r"^tbpipe: error: ", *needles,
                     env={"STORAGE_EMULATOR_HOST": endpoint})
