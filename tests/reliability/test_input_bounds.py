"""Every input whose size the user controls is bounded before allocation; no read can block.

Issue 23, classes 4 and 5. Each bound (``components/common/limits.py``) is measured: the
peak of Python and numpy allocations (``tracemalloc``) for an input far past the bound is
compared with the peak for a small valid input in the same test, a ratio, never a time.
Every path that enters (params file, data, image files, model.json, model.keras, a run's
summary) is tried with a real FIFO without a writer: the check is ``os.stat`` before any
open (``common/regular_files.py check_regular``), so it answers at once; a thread with a
timeout proves it.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tbpipe.components.common import limits
from tbpipe.components.common.errors import InputError, SettingError, TbpipeError
from tbpipe.components.common.model_format import load_keras_file, read_model_meta
from tbpipe.components.common.run_summary import list_runs, read_run_summary
from tbpipe.pipelines.cli.params_file import read_params_file
from tbpipe.pipelines.sweep import Sweep

SLACK = 256 << 10  # bytes of allocator noise allowed on top of the small case's peak


def peak(action: Callable[[], object]) -> tuple[int, object]:
    """(peak traced bytes, result or the exception raised) of ``action``."""
    tracemalloc.start()
    try:
        try:
            outcome: object = action()
        except (InputError, SettingError) as exc:
            outcome = exc
        return tracemalloc.get_traced_memory()[1], outcome
    finally:
        tracemalloc.stop()


def sparse(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk (a hole)."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def assert_bounded(small: int, huge: int) -> None:
    assert huge <= 2 * small + SLACK, f"peak {huge} bytes past the bound vs {small} small"


def test_a_huge_params_file_is_refused_before_reading(tmp_path: Path) -> None:
    small_file = tmp_path / "p.yaml"
    small_file.write_text("epochs: 3\nlearning_rate: 1e-3\nrun_name: r1\n")
    small, values = peak(lambda: read_params_file(str(small_file)))
    assert values == {"epochs": 3, "learning_rate": 0.001, "run_name": "r1"}
    huge_file = tmp_path / "h.yaml"  # valid YAML: one 8 MB comment line, then a value
    huge_file.write_bytes(b"# " + b"x" * (8 << 20) + b"\nepochs: 3\n")
    huge, error = peak(lambda: read_params_file(str(huge_file)))
    assert f"bytes, more than the {limits.MAX_PARAMS_FILE_BYTES}" in str(error)
    assert_bounded(small, huge)
    _, error = peak(lambda: read_params_file(str(sparse(tmp_path / "s.yaml", 1 << 30))))
    assert f"{1 << 30} bytes, more than the {limits.MAX_PARAMS_FILE_BYTES}" in str(error)


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nepochs: *a8\n")  # 10**9 strings if expanded
    small_file = tmp_path / "p.yaml"
    small_file.write_text("epochs: [1, 2]\n")
    small, _ = peak(lambda: read_params_file(str(small_file)))
    huge, error = peak(lambda: read_params_file(str(bomb)))
    assert "anchors and aliases (& and *) are not read" in str(error)
    assert len(str(error)) < 200
    assert_bounded(small, huge)


def test_a_sweep_grid_is_bounded_from_its_counts(tmp_path: Path) -> None:
    small, _ = peak(lambda: Sweep((("seed", (1, 2)), ("epochs", (1, 2)))).trials())
    axes = tuple((key, tuple(range(1, 1001))) for key in ("seed", "epochs", "batch_size"))
    huge, error = peak(lambda: Sweep(axes))  # 10**9 combinations
    assert isinstance(error, SettingError) and "1000000000 trials" in str(error)
    assert_bounded(small, huge)
    sampled, trials = peak(lambda: Sweep(axes, samples=4).trials())  # picks, no grid built
    assert len(trials) == 4 and len({tuple(t.values()) for t in trials}) == 4
    assert_bounded(small, sampled)


def test_a_huge_summary_is_one_row_not_a_crash(tmp_path: Path) -> None:
    run = tmp_path / "exp" / "r1"
    run.mkdir(parents=True)
    (run / "_summary.json").write_text(json.dumps({"started": 1.0, "test_accuracy": 0.5}))
    small, rows = peak(lambda: list_runs(str(tmp_path)))
    sparse(run / "_summary.json", 1 << 30)
    huge, rows = peak(lambda: list_runs(str(tmp_path)))
    assert rows[0]["status"].startswith(f"unreadable summary ({1 << 30} bytes, more than")
    assert_bounded(small, huge)


def test_a_huge_promotion_record_is_refused_before_reading(tmp_path: Path) -> None:
    """A registry's promotion.json past MAX_RECORD_BYTES (1 GiB, sparse): one line, read no
    further than the bound (before: read whole)."""
    from tbpipe.components.promotion.publish import RECORD_FILE, read_record

    (tmp_path / RECORD_FILE).write_text(
        '{"format": "tbpipe.promotion.v2", "current": null, "history": [], "aliases": {}}')
    small, record = peak(lambda: read_record(str(tmp_path)))
    assert record["history"] == [], record
    sparse(tmp_path / RECORD_FILE, 1 << 30)
    huge, error = peak(lambda: read_record(str(tmp_path)))
    assert isinstance(error, InputError), error
    assert f"{1 << 30} bytes, more than the {limits.MAX_RECORD_BYTES} a promotion record" \
        in str(error), error
    assert huge < limits.MAX_RECORD_BYTES // 16, huge  # refused from its size, unread


def test_a_huge_model_json_or_class_count_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    meta = {"format": "tbpipe.model.v1", "image_shape": [4, 4, 1], "num_classes": 2}
    (model / "model.json").write_text(json.dumps(meta))
    small, _ = peak(lambda: read_model_meta(str(model)))
    sparse(model / "model.json", 1 << 30)
    huge, error = peak(lambda: read_model_meta(str(model)))
    assert f"more than the {limits.MAX_METADATA_BYTES}" in str(error)
    assert_bounded(small, huge)
    (model / "model.json").write_text(json.dumps({**meta, "num_classes": 10**9}))
    with pytest.raises(InputError, match=rf"num_classes 1000000000, not 1\.\.{limits.MAX_CLASSES}"):
        read_model_meta(str(model))


def test_a_huge_dataset_manifest_is_refused(tmp_path: Path) -> None:
    from tbpipe.components.common.dataset import read_info
    from tests.helpers import write_dataset

    write_dataset(str(tmp_path / "data"), n=8)
    small, _ = peak(lambda: read_info(str(tmp_path / "data")))
    sparse(tmp_path / "data" / "dataset.json", 1 << 30)
    huge, error = peak(lambda: read_info(str(tmp_path / "data")))
    assert f"more than the {limits.MAX_METADATA_BYTES}" in str(error)
    assert_bounded(small, huge)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_wide_table_is_read_in_chunks_of_bounded_bytes(tmp_path: Path, suffix: str,
                                                         monkeypatch) -> None:
    """Rows per chunk shrink with the row's width (before: 10 000 rows whatever the width)."""
    import numpy as np
    import pandas as pd

    from tbpipe.components.preprocessing import readers

    monkeypatch.setattr(readers, "CHUNK_BYTES", 72 << 10)  # 64 rows of 144 pixels (8 bytes)

    def table(rows: int) -> str:
        rng = np.random.default_rng(0)
        frame = pd.DataFrame(rng.integers(0, 256, (rows, 144)),
                             columns=[f"pixel{i}" for i in range(144)])
        frame.insert(0, "label", np.arange(rows) % 2)
        path = tmp_path / f"t{rows}{suffix}"
        frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
        return str(path)

    def read(data: str) -> list[int]:
        with readers.open_source(data, 10_000) as source:
            return [len(chunk.labels) for chunk in source.chunks()]

    small_data, big_data = table(64), table(1024)
    read(small_data)  # imports and first-use caches outside the measurement
    small, _ = peak(lambda: read(small_data))
    big, sizes = peak(lambda: read(big_data))
    assert sum(sizes) == 1024 and max(sizes) <= 64, sizes
    assert big <= 1.5 * small + (64 << 10), f"peak {big} for 16x the rows vs {small}"


def test_a_table_wider_than_an_image_may_be_is_refused() -> None:
    from tbpipe.components.preprocessing.readers import table_shape

    with pytest.raises(InputError, match=rf"{limits.MAX_IMAGE_PIXELS + 1} pixel columns, more"):
        table_shape("t.csv", limits.MAX_IMAGE_PIXELS + 1, (1, 1, limits.MAX_IMAGE_PIXELS + 1))


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` gray pixels (its data is tiny)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                             0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_an_image_claiming_more_pixels_than_the_bound_is_skipped_before_decoding(
        tmp_path: Path) -> None:
    from PIL import Image

    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data

    data = tmp_path / "imgs"
    for name, value in (("a", 10), ("b", 200)):
        (data / name).mkdir(parents=True)
        for i in range(5):
            Image.new("L", (8, 8), value).save(data / name / f"{i}.png")

    def run(out: str):  # noqa: ANN202
        return preprocess_data(str(data), f"{out}/train", f"{out}/val", f"{out}/test", None,
                               PreprocessConfig(val_fraction=0.2, test_fraction=0.2))

    small, _ = peak(lambda: run(str(tmp_path / "o1")))
    (data / "b" / "bomb.png").write_bytes(png_header_claiming(40_000, 40_000))  # 1.6 GB
    huge, result = peak(lambda: run(str(tmp_path / "o2")))
    assert result.stats["skipped_too_large"] == 1 and result.stats["rows_kept"] == 10
    assert_bounded(small, huge)


# ---- a FIFO wherever a path enters --------------------------------------------------------

def finishes(action: Callable[[], object], timeout: float = 30.0) -> BaseException:
    """The exception ``action`` raises, in a thread that must end within ``timeout``."""
    outcome: list[BaseException] = []

    def target() -> None:
        try:
            action()
            outcome.append(AssertionError("no error"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "blocked on a FIFO"
    return outcome[0]


@pytest.mark.parametrize("entry", ["params-file", "model.json", "model.keras", "summary",
                                   "data", "dataset.json"])
def test_a_fifo_is_refused_at_every_entry(tmp_path: Path, entry: str) -> None:
    fifo = tmp_path / "pipe"
    if entry == "params-file":
        os.mkfifo(fifo)
        action, shown = (lambda: read_params_file(str(fifo))), str(fifo)
    elif entry == "model.json":
        (tmp_path / "model").mkdir()
        os.mkfifo(tmp_path / "model" / "model.json")
        action, shown = (lambda: read_model_meta(str(tmp_path / "model"))), "model.json"
    elif entry == "model.keras":
        fifo = tmp_path / "m.keras"
        os.mkfifo(fifo)
        action, shown = (lambda: load_keras_file(str(fifo))), str(fifo)
    elif entry == "summary":
        (tmp_path / "logs" / "e" / "r").mkdir(parents=True)
        os.mkfifo(tmp_path / "logs" / "e" / "r" / "_summary.json")
        action = lambda: read_run_summary(str(tmp_path / "logs"), "e", "r")  # noqa: E731
        shown = "_summary.json"
    elif entry == "dataset.json":
        from tbpipe.components.common.dataset import read_info

        (tmp_path / "data").mkdir()
        os.mkfifo(tmp_path / "data" / "dataset.json")
        action, shown = (lambda: read_info(str(tmp_path / "data"))), "dataset.json"
    else:
        from tbpipe.components.preprocessing.readers import open_source

        fifo = tmp_path / "data.csv"
        os.mkfifo(fifo)

        def action() -> None:
            with open_source(str(fifo), 100):
                pass

        shown = str(fifo)
    error = finishes(action)
    assert isinstance(error, TbpipeError), repr(error)
    assert shown in str(error) and "FIFO (named pipe)" in str(error), str(error)


def test_a_file_swapped_for_a_fifo_after_the_check_is_refused_not_waited_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """read_bounded checks the path, then the descriptor it opened: the swap between the two
    (here: the path check made to pass) ends in the one line, not a blocked read."""
    from tbpipe.components.common import regular_files

    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)
    monkeypatch.setattr(regular_files, "check_regular", lambda *_, **__: os.stat(__file__))
    error = finishes(lambda: regular_files.read_bounded("--params-file params.yaml", str(fifo),
                                                        2**20, "params file"))
    assert isinstance(error, TbpipeError), repr(error)
    assert str(error).startswith("--params-file params.yaml: is a FIFO (named pipe) now"), error


@pytest.mark.parametrize("name", ["model.json", "_summary.json", "dataset.json"])
@pytest.mark.parametrize("store", [pytest.param("s3", marks=pytest.mark.s3),
                                   pytest.param("gcs", marks=pytest.mark.gcs)])
def test_a_huge_remote_metadata_file_is_refused_before_it_is_in_memory(
        store: str, name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """One ranged read of MAX_METADATA_BYTES + 1 (before: the whole object, then its size)."""
    from tbpipe.components.common import storage
    from tbpipe.components.common.errors import StorageError

    if name == "dataset.json":  # imports TensorFlow: only here, and before measuring
        from tbpipe.components.training.data import read_dataset_info

    root = request.getfixturevalue(f"{store}_root")
    size = 32 * limits.MAX_METADATA_BYTES
    uri = storage.join(root, "exp", "run", name)
    storage.upload_file(str(sparse(tmp_path / name, size)), uri)
    read = {"model.json": lambda: read_model_meta(storage.join(root, "exp", "run")),
            "_summary.json": lambda: read_run_summary(root, "exp", "run"),
            "dataset.json": lambda: read_dataset_info(storage.join(root, "exp", "run"))}[name]

    def refused() -> TbpipeError:
        with pytest.raises((InputError, StorageError)) as error:
            read()
        return error.value

    used, error = peak(refused)
    print(f"{store} {name}: peak {used} bytes for a {size}-byte object")
    assert used < size // 8, f"peak {used} bytes reading a {size}-byte {name}"
    line = str(error)
    assert line.startswith(f"{uri}: over {limits.MAX_METADATA_BYTES} bytes, more than the "
                           f"{limits.MAX_METADATA_BYTES} a "), line
    assert "\n" not in line


# ---- memory at the bounds themselves -------------------------------------------------------
#: Traced bytes one evaluation table may peak at, per confusion-matrix cell, at MAX_CLASSES
#: (256 MiB for 1024**2 cells; measured: at most 124 MiB, docs/reliability.md).
CELL_BYTES = 256


def max_classes_scores():  # noqa: ANN201 - (result, pr histograms, gate scores new and base)
    """An evaluation at MAX_CLASSES: 8 test examples a class, 70 % right."""
    import numpy as np

    from tbpipe.components.evaluation.core import summarize
    from tbpipe.components.evaluation.metrics import PR_THRESHOLDS, confusion_matrix
    from tbpipe.components.promotion.gate import ExampleScores

    k = limits.MAX_CLASSES
    rng = np.random.default_rng(0)
    labels = rng.integers(0, k, 8 * k)
    predicted = np.where(rng.random(labels.size) < 0.7, labels, rng.integers(0, k, labels.size))
    names = tuple(f"class-{i}" for i in range(k))
    result = summarize(confusion_matrix(labels, predicted, k), 1.0, 0.5, names)
    pr = np.zeros((k, 2, PR_THRESHOLDS))
    pr[:, 1, 0], pr[:, 0, -1] = labels.size - 8, 8

    def scores(guess: np.ndarray) -> ExampleScores:
        return ExampleScores(labels=labels, predicted=guess, losses=np.ones(labels.size),
                             num_classes=k, class_names=names, params=1, latency_ms=1.0)

    baseline = np.where(rng.random(labels.size) < 0.6, labels, predicted)
    return result, pr, scores(predicted), scores(baseline)


def test_evaluate_report_and_gate_at_max_classes_stay_within_their_bound() -> None:
    """The k**2 work (confusion, confused pairs, per-class tables, the gate) at MAX_CLASSES."""
    import numpy as np
    import sklearn.metrics  # noqa: F401 - imported before measuring: its import is not the work

    from tbpipe.components.evaluation.config import EvaluateConfig
    from tbpipe.components.evaluation.core import summarize
    from tbpipe.components.evaluation.metrics import most_confused
    from tbpipe.components.evaluation.report import render_html_report, render_report
    from tbpipe.components.promotion.gate import Change, Gate, Threshold, check_gate

    result, _, new, baseline = max_classes_scores()
    confusion = np.asarray(result.confusion_matrix)
    every_class = {"f1": Threshold(lower_bound=0.0),
                   "recall": Threshold(change=Change("higher", absolute=-1.0))}
    gate = Gate(metrics={"accuracy": Threshold(lower_bound=0.1)}, classes={"*": every_class},
                significance=0.9, significance_metric="macro_f1", resamples=200)
    work = {"summarize": lambda: summarize(confusion, 1.0, 0.5, result.names),
            "most_confused": lambda: most_confused(confusion, 10),
            "render_report": lambda: render_report(result, "m", "t", {}, EvaluateConfig()),
            "render_html_report": lambda: render_html_report(result, [], 0, "m", "t", {},
                                                             EvaluateConfig()),
            "check_gate": lambda: check_gate(gate, new, baseline)}
    bound = CELL_BYTES * limits.MAX_CLASSES ** 2
    for name, action in work.items():
        used, outcome = peak(action)
        print(f"{name} at {limits.MAX_CLASSES} classes: peak {used / 2**20:.1f} MiB")
        assert not isinstance(outcome, Exception), outcome
        assert used < bound, f"{name}: peak {used} bytes at MAX_CLASSES, bound {bound}"


def test_tensorboard_summaries_at_max_classes_stay_within_their_bound(tmp_path: Path) -> None:
    """log_evaluation at MAX_CLASSES (before: a 20480-pixel confusion image, about 15 GB)."""
    import numpy as np

    from tbpipe.components.common.tensorboard.writer import HEATMAP_MAX_SIDE, open_writer
    from tbpipe.components.evaluation.report import labeled_heatmap, log_evaluation

    result, pr, _, _ = max_classes_scores()

    def log() -> None:
        with open_writer(str(tmp_path)) as writer:
            log_evaluation(writer, result, pr)

    used, outcome = peak(log)
    print(f"log_evaluation at {limits.MAX_CLASSES} classes: peak {used / 2**20:.1f} MiB")
    assert outcome is None
    assert used < CELL_BYTES * limits.MAX_CLASSES ** 2, used
    image = labeled_heatmap(np.eye(limits.MAX_CLASSES, dtype=np.float32), result.names)
    assert image.shape == (3, HEATMAP_MAX_SIDE, HEATMAP_MAX_SIDE)  # 2-pixel cells, unlabelled


#: Resident bytes decoding one image may add, per pixel, at MAX_IMAGE_PIXELS (384 MiB);
#: measured: at most 341 MiB, an RGBA PNG with transparency (docs/reliability.md).
PIXEL_BYTES = 24
_DECODE = """
import sys
from PIL import Image, ImageOps  # imported before the peak is reset
from tbpipe.components.common.image_files import decode_image

def kib(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key))

with open("/proc/self/clear_refs", "w") as refs:  # the peak (VmHWM) starts again from here
    refs.write("5")
before = kib("VmRSS:")
pixels, notes = decode_image(sys.argv[1], 224, 224, 3)
print((kib("VmHWM:") - before) * 1024, pixels.shape, notes)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux's peak reset")
@pytest.mark.parametrize("kind", ["rgb.png", "rgba.png", "gray16.png"])
def test_decoding_an_image_at_max_image_pixels_stays_within_its_bound(kind: str,
                                                                      tmp_path: Path) -> None:
    """PIL's buffers are not Python's (tracemalloc misses them): a child's peak RSS is read.

    The widest conversions: 16-bit gray to 8 bits (before: four uint32 copies, 229 MiB) and
    transparency flattened onto black.
    """
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    side = int(limits.MAX_IMAGE_PIXELS ** 0.5)
    ramp = (np.add.outer(np.arange(side), np.arange(side)) % 256).astype(np.uint8)
    image = {"rgb.png": lambda: Image.fromarray(np.stack([ramp] * 3, -1), "RGB"),
             "rgba.png": lambda: Image.fromarray(np.stack([ramp] * 4, -1), "RGBA"),
             "gray16.png": lambda: Image.fromarray(ramp.astype(np.uint16) * 257)}[kind]()
    image.save(tmp_path / kind, compress_level=1)
    child = subprocess.run([sys.executable, "-c", _DECODE, str(tmp_path / kind)],
                           capture_output=True, text=True, timeout=120, check=True)
    used, shape = int(child.stdout.split()[0]), child.stdout.split(" ", 1)[1]
    print(f"decoding a {side}x{side} {kind}: peak {used / 2**20:.1f} MiB resident")
    assert shape.startswith("(224, 224, 3)")
    assert used < PIXEL_BYTES * limits.MAX_IMAGE_PIXELS, used


@pytest.mark.parametrize("store", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_huge_run_claim_reads_as_unreadable_without_being_read_whole(
        store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """``_run.json`` held by another owner is read bounded (before: whole, after the create)."""
    from tbpipe.components.common import storage
    from tbpipe.components.common.run_claim import RUN_MARKER, claim_run

    root = str(tmp_path / "logs") if store == "local" else request.getfixturevalue("s3_root")
    size = 32 * limits.MAX_METADATA_BYTES
    claim = storage.join(root, "exp", "r1", RUN_MARKER)
    if store == "local":
        os.makedirs(os.path.dirname(claim))
        sparse(Path(claim), size)
    else:
        storage.upload_file(str(sparse(tmp_path / RUN_MARKER, size)), claim)
    used, error = peak(lambda: claim_run(root, "exp", "r1", "job-b"))
    print(f"{store}: peak {used} bytes for a {size}-byte {RUN_MARKER}")
    assert used < size // 8, used
    assert "claimed by an unreadable claim): pick another --run-name" in str(error)
    claim_run(root, "exp", "r1", "job-b", resume=True)  # taken over
    claim_run(root, "exp", "r1", "job-b")
