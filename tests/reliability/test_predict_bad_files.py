"""``tbpipe predict``: a bad file is one line, the others are still classified, status 1.

Bad files: a decompression bomb (a header claiming billions of pixels, or more than
``MAX_IMAGE_PIXELS``), a truncated PNG, a folder, a FIFO (refused from ``os.stat``, never
opened: opening one blocks until a writer comes), a text file. A model whose SavedModel
variables or ``.keras`` file are damaged is one line too (TensorFlow's own errors).
"""

import os
import shutil
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.limits import MAX_IMAGE_PIXELS
from tbpipe.components.common.serving import (
    export_model_folder,
    load_predictor,
    predict_files,
    saved_model_path,
)
from tests.unit.test_evaluate import save_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """An untrained tiny 8x8x1 model with its SavedModel (what select writes)."""
    folder = save_tiny_model(tmp_path_factory.mktemp("predict") / "model", epochs=0)
    export_model_folder(folder)
    return folder


def png_header(path: Path, width: int, height: int) -> str:
    """A PNG whose header claims ``width`` x ``height`` pixels, with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return str(path)


def good_png(path: Path, seed: int) -> str:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return str(path)


def bad_files(folder: Path) -> dict[str, str]:
    """Each kind of bad file, written under ``folder``: kind -> path."""
    truncated = folder / "truncated.png"
    whole = Path(good_png(folder / "whole.png", 3)).read_bytes()
    truncated.write_bytes(whole[: len(whole) * 3 // 5])
    (folder / "a-folder.png").mkdir()
    os.mkfifo(folder / "fifo.png")
    (folder / "notes.png").write_text("not an image at all\n")
    return {
        "bomb": png_header(folder / "bomb.png", 60000, 60000),  # Pillow's own error
        "above-the-bound": png_header(folder / "big.png", 4097, 4097),
        "truncated": str(truncated), "folder": str(folder / "a-folder.png"),
        "fifo": str(folder / "fifo.png"), "not-an-image": str(folder / "notes.png"),
    }


EXPECTED = {"bomb": f"more than {MAX_IMAGE_PIXELS} pixels, the most predict reads",
            "above-the-bound": f"more than {MAX_IMAGE_PIXELS} pixels, the most predict reads",
            "truncated": "cannot read the image", "folder": "is a folder, not an image file",
            "fifo": "is a FIFO", "not-an-image": "cannot read the image"}


def test_each_bad_file_is_one_line_and_the_rest_are_classified(model, tmp_path):
    bad = bad_files(tmp_path)
    good = [good_png(tmp_path / "one.png", 1), good_png(tmp_path / "two.png", 2)]
    files = [good[0], *bad.values(), good[1]]
    lines, errors, failed = [], [], []

    def classify() -> None:
        failed.append(predict_files(model, files, emit=lines.append,
                                    emit_error=errors.append))

    worker = threading.Thread(target=classify, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "predict blocked (the FIFO was opened?)"
    assert failed == [len(bad)]
    assert [line.split(": ")[0] for line in lines] == good
    assert len(errors) == len(bad)
    for (kind, path), line in zip(bad.items(), errors, strict=True):
        assert line.startswith(f"error: {path}: ") and EXPECTED[kind] in line, (kind, line)
        assert "\n" not in line


def test_damaged_models_are_one_line(model, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(model, damaged)
    variables = Path(saved_model_path(str(damaged))) / "variables"
    for data in variables.glob("variables.data-*"):
        data.write_bytes(data.read_bytes()[:8])  # corrupt SavedModel variables
    with pytest.raises(InputError, match=r"saved_model/1: cannot load the SavedModel \("):
        load_predictor(str(damaged)).predict(np.zeros((1, 8, 8, 1), np.uint8))
    shutil.rmtree(damaged / "saved_model")
    keras_file = damaged / "model.keras"
    keras_file.write_bytes(keras_file.read_bytes()[:100])  # a truncated .keras
    with pytest.raises(InputError, match=r"model.keras: cannot load the Keras model"):
        load_predictor(str(damaged))


def test_predict_cli_goes_on_after_a_bomb_and_fails_at_the_end(model, tmp_path, capsys):
    from tbpipe.pipelines.cli.main import main

    good = [good_png(tmp_path / "one.png", 1), good_png(tmp_path / "two.png", 2)]
    bomb = png_header(tmp_path / "bomb.png", 60000, 60000)
    assert main(["predict", "--model", model, good[0], bomb, good[1]]) == 1
    out, err = capsys.readouterr()
    assert [line.split(": ")[0] for line in out.splitlines()] == good
    assert err.splitlines() == [err.strip()] and err.startswith(f"error: {bomb}: "), err
