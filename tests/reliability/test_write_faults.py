"""Every write checked: a write that fails is one line naming the path and the cause.

Each writer (TensorBoard events, checkpoint, Model folder, Dataset, evaluation report) meets
each bad place (a read-only folder, a file where a folder should be, a full disk) and must
fail with one ``tbpipe: <step>: error:`` line naming its path and the system's cause, leave
what the path held before whole, and leave no ``.partial`` behind. ``tbpipe compile --package``
refuses a name KFP cannot compile to before touching the file, and never empties an existing
file. Last, a disk that fills up under the log root mid-training fails the train step (the
observed bug: SUCCESS with one epoch of three in the event file).

Read-only folders and full disks are small tmpfs mounts (root only: the suite runs as root
in its container; without root a read-only folder is a ``chmod 0555`` one, and full-disk
cases are skipped).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tbpipe.components.common.errors import exit_on_error
from tests.helpers import read_scalars, write_dataset
from tests.reliability.support import frame, one_error_line, tree_digest, write_table

ROOT = os.geteuid() == 0
FULL = r"No space left on device"
READ_ONLY = r"Read-only file system" if ROOT else r"Permission denied"
NOT_A_FOLDER = r"a file is where a folder should be"


# ---- places where writes fail -------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``where`` (skip when it cannot be mounted)."""
    if not ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of ``folder`` until it refuses another byte (ENOSPC)."""
    fd = os.open(folder / ".filler", os.O_WRONLY | os.O_CREAT)
    chunk = b"\0" * (1 << 16)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(chunk) == 1:
                    return
                chunk = chunk[:len(chunk) // 2]
    finally:
        os.close(fd)


@contextlib.contextmanager
def read_only(tmp_path: Path, before: Callable[[Path], object]) -> Iterator[Path]:
    """A folder holding ``before``'s output, then made read-only (a ro remount as root)."""
    if not ROOT:
        folder = tmp_path / "ro"
        folder.mkdir()
        before(folder / "out")
        folders = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for each in folders:
            each.chmod(0o555)
        try:
            yield folder / "out"
        finally:
            for each in folders:
                each.chmod(0o755)
        return
    with tmpfs(tmp_path / "ro", "8m") as folder:
        before(folder / "out")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder / "out"


@contextlib.contextmanager
def file_in_the_way(tmp_path: Path, before: Callable[[Path], object]) -> Iterator[Path]:
    """``out`` lies under a plain file where its folder should be (nothing to keep there)."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    yield tmp_path / "blocker" / "out"


@contextlib.contextmanager
def disk_full(tmp_path: Path, before: Callable[[Path], object]) -> Iterator[Path]:
    """A small disk holding ``before``'s output, then filled to the last byte."""
    with tmpfs(tmp_path / "small", "8m") as folder:
        before(folder / "out")
        fill(folder)
        yield folder / "out"


PLACES = {"read-only-folder": (read_only, READ_ONLY),
          "file-where-a-folder-should-be": (file_in_the_way, NOT_A_FOLDER),
          "disk-full": (disk_full, FULL)}


# ---- the writers --------------------------------------------------------------------------

@functools.cache
def tiny_model():  # noqa: ANN201 - a compiled keras.Model
    from tbpipe.components.common.keras_import import import_keras

    keras = import_keras()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(4, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def write_events(out: Path) -> None:
    from tbpipe.components.common.tensorboard.writer import open_writer

    with open_writer(str(out), flush_secs=1) as writer:
        for step in range(20):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
        writer.add_text("notes", "x" * 20_000, 0)  # more than the write buffer


def write_checkpoint(out: Path) -> None:
    from tbpipe.components.training.checkpoint import CheckpointState, read_state, save_checkpoint

    last = None if not out.is_dir() else read_state(str(out))
    slot = "ckpt-b.keras" if last and last.slot == "ckpt-a.keras" else "ckpt-a.keras"
    save_checkpoint(tiny_model(), str(out), CheckpointState(1 + (last.epoch if last else 0), 3,
                                                            slot, {}, {}))


def write_model(out: Path) -> None:
    from tbpipe.components.common.model_format import save_model_folder

    save_model_folder(tiny_model(), str(out), {"image_shape": [8, 8, 1], "num_classes": 4})


def write_datasets(out: Path) -> None:
    """The preprocess step's writers: three Datasets (atomic folders) and stats.json."""
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data

    data = write_table(Path(os.environ["TBPIPE_TEST_TABLE_DIR"]) / "table.csv", frame(n=60))
    preprocess_data(data, str(out / "train"), str(out / "val"), str(out / "test"), None,
                    PreprocessConfig())


def write_report(out: Path) -> None:
    """The evaluate step: events to a good log dir, then the report to ``out``."""
    from tbpipe.components.evaluation.config import EvaluateConfig
    from tbpipe.components.evaluation.core import evaluate_model

    inputs = Path(os.environ["TBPIPE_TEST_TABLE_DIR"])
    if not (inputs / "model").exists():
        write_model(inputs / "model")
        write_dataset(str(inputs / "test"), n=16, seed=3)
    evaluate_model(str(inputs / "model"), str(inputs / "test"), str(out / "report.md"),
                   str(inputs / "logs"), EvaluateConfig(accuracy_target=0.0))


@dataclasses.dataclass(frozen=True)
class Writer:
    """A writer under test: ``write(out)``, the step whose line it is, whether a failed
    write must leave the previous output at ``out`` whole (events append instead)."""

    write: Callable[[Path], None]
    step: str
    keeps_previous: bool = True
    before: Callable[[Path], object] | None = None  # what is there first (default: write)


WRITERS = {"event-writer": Writer(write_events, "train", keeps_previous=False,
                                  # a second writer in the same second would reuse (empty)
                                  # the first one's event file name: a folder, no file
                                  before=lambda out: out.mkdir(parents=True)),
           "checkpoint": Writer(write_checkpoint, "train"),
           "model-folder": Writer(write_model, "train"),
           "dataset": Writer(write_datasets, "preprocess"),
           "report": Writer(write_report, "evaluate")}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("writer", WRITERS)
def test_a_failed_write_is_one_line_and_keeps_what_was_there(writer, place, tmp_path, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("TBPIPE_TEST_TABLE_DIR", str(tmp_path / "inputs"))
    make_place, cause = PLACES[place]
    case = WRITERS[writer]
    with make_place(tmp_path, case.before or case.write) as out:
        before = tree_digest(out)
        with pytest.raises(SystemExit) as exit_info, exit_on_error(case.step):
            case.write(out)
        assert exit_info.value.code == 1
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        line = one_error_line(captured.err, rf"^tbpipe: {case.step}: error: ", cause)
        assert str(out) in line, line
        if case.keeps_previous:
            assert tree_digest(out) == before
        left = [p.name for p in out.parent.rglob("*") if ".partial" in p.name]
        assert left == []


# ---- tbpipe compile --package ------------------------------------------------------------------

def run_compile(path: Path, capsys) -> tuple[int, str]:  # noqa: ANN001
    from tbpipe.pipelines.cli.main import main

    code = main(["compile", "--package", str(path)])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.err


EXISTING = b"# a file the user cares about\n"

COMPILE_CASES = {
    # name: (make the target under tmp_path, regexes of the error line)
    "json-name": (lambda d: d / "pipeline.json", (r"pipeline\.json", r"YAML only",
                                                 r"\.yaml or \.yml")),
    "no-suffix": (lambda d: d / "pipeline", (r"YAML only",)),
    "missing-parent-folder": (lambda d: d / "nowhere" / "p.yaml",
                              (r"No such file or directory", r"create it")),
    "file-where-a-folder-should-be": (lambda d: d / "existing.yaml" / "p.yaml",
                                      (NOT_A_FOLDER,)),
    "a-folder-at-the-path": (lambda d: d / "folder.yaml", (r"Is a directory",)),
}


@pytest.mark.parametrize("case", COMPILE_CASES)
def test_compile_refuses_before_touching_the_file(case, tmp_path, capsys):
    make, needles = COMPILE_CASES[case]
    for name in ("pipeline.json", "pipeline", "existing.yaml"):
        (tmp_path / name).write_bytes(EXISTING)
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "folder.yaml" / "inside").write_bytes(EXISTING)
    before = tree_digest(tmp_path)
    code, err = run_compile(make(tmp_path), capsys)
    assert code == 1
    line = one_error_line(err, r"^tbpipe: error: ", *needles)
    assert str(make(tmp_path)) in line
    assert tree_digest(tmp_path) == before  # every file kept byte for byte, nothing added


def test_compile_into_a_read_only_folder_keeps_the_old_yaml(tmp_path, capsys):
    def existing(out: Path) -> None:
        out.mkdir()
        (out / "p.yaml").write_bytes(EXISTING)

    with read_only(tmp_path, existing) as out:
        code, err = run_compile(out / "p.yaml", capsys)
        assert code == 1
        one_error_line(err, r"^tbpipe: error: ", rf"{out}/p\.yaml: cannot write", READ_ONLY)
        assert sorted(p.name for p in out.iterdir()) == ["p.yaml"]
        assert (out / "p.yaml").read_bytes() == EXISTING


def test_compile_replaces_an_existing_yaml_whole(tmp_path, capsys):
    target = tmp_path / "pipeline.yml"
    target.write_bytes(EXISTING)
    code, _ = run_compile(target, capsys)
    assert code == 0
    assert target.read_bytes().startswith(b"#") and b"pipelineInfo" in target.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.yml"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- the disk fills up mid-training -----------------------------------------------------------

@pytest.mark.slow
def test_disk_full_mid_training_fails_the_train_step_naming_the_log_dir(tmp_path, capsys,
                                                                         monkeypatch):
    """The log root is a small disk that fills up once the first epoch is logged and
    checkpointed: the step fails (exit 1) with one line naming the log dir and ENOSPC, no
    Model is written, and the first epoch's events stay readable."""
    from kfp.dsl import Dataset, Metrics, Model

    from tbpipe.components import train
    from tbpipe.components.common.keras_import import import_keras
    from tbpipe.components.training import core

    keras = import_keras()
    write_dataset(str(tmp_path / "train"), n=48, seed=0)
    write_dataset(str(tmp_path / "val"), n=16, seed=1)

    with tmpfs(tmp_path / "logs", "16m") as log_root:

        class FillAfterFirstEpoch(keras.callbacks.Callback):
            """Runs after tbpipe's callbacks: epoch 1 is logged and checkpointed."""

            def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: ANN001
                if epoch == 0:
                    fill(log_root)

        def job_with_filler(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            return core_fit_job(*args, **kwargs, callbacks=[FillAfterFirstEpoch()])

        core_fit_job = core.FitJob
        monkeypatch.setattr(core, "FitJob", job_with_filler)
        model, metrics = Model(uri=str(tmp_path / "model")), Metrics(uri=str(tmp_path / "m"))
        with pytest.raises(SystemExit) as exit_info:
            train.python_func(train_data=Dataset(uri=str(tmp_path / "train")),
                              val_data=Dataset(uri=str(tmp_path / "val")), model=model,
                              metrics=metrics, log_root=str(log_root), epochs=3, batch_size=16,
                              experiment="exp", run_name="r1", job_name="job")
        assert exit_info.value.code == 1
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        log_dir = log_root / "exp" / "r1" / "train"
        one_error_line(captured.err, rf"^tbpipe: train: error: {log_dir}: ",
                       r"cannot write TensorBoard events", FULL)
        assert not (tmp_path / "model").exists()
        assert "epochs" not in metrics.metadata
        steps = {step for step, _ in read_scalars(str(log_dir))["epoch/loss"]}
        assert 3 in steps  # epoch 1 (3 batches) was written before the disk filled
