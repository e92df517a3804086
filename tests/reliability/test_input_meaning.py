"""Inputs read as their owner means them, or refused with one line (issue 23, class 1).

Each test fails on the code before issue 23: 16-bit images were clipped to white, alpha
dropped whatever lay under it, EXIF rotation ignored, a ``val/`` folder became a class, a
nested folder or an empty class folder vanished without a word, a class whose rows were all
dropped shrank the model silently, class names were never compared, and the run's one line
said nothing of what was skipped or converted.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from tbpipe.components.common.dataset import iter_shards
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.model_format import check_class_names
from tbpipe.components.preprocessing.config import PreprocessConfig
from tbpipe.components.preprocessing.core import preprocess_data
from tbpipe.components.preprocessing.summary import result_figure


def run(tmp_path: Path, data: Path | str, **config: object):  # noqa: ANN201
    out = tmp_path / "out"
    return preprocess_data(str(data), str(out / "train"), str(out / "val"), str(out / "test"),
                           None, PreprocessConfig(val_fraction=0.2, test_fraction=0.2,
                                                  **config))


def refused(tmp_path: Path, data: Path | str, pattern: str, **config: object) -> str:
    """Run preprocess expecting one InputError line matching ``pattern``; nothing written."""
    with pytest.raises(InputError) as caught:
        run(tmp_path, data, **config)
    line = str(caught.value)
    assert "\n" not in line and re.search(pattern, line), line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    return line


def pixels(tmp_path: Path) -> dict[int, set[int]]:
    """Label -> the set of first-pixel bytes in every split."""
    seen: dict[int, set[int]] = {}
    for split in ("train", "val", "test"):
        for images, labels in iter_shards(str(tmp_path / "out" / split)):
            for image, label in zip(images, labels, strict=True):
                seen.setdefault(int(label), set()).add(int(image.reshape(-1)[0]))
    return seen


def gray(path: Path, value: int, size: tuple[int, int] = (4, 4)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path)


def class_folder(root: Path, name: str, value: int, n: int = 5) -> None:
    for i in range(n):
        gray(root / name / f"{i}.png", value)


# ---- image modes, bit depths, formats ----------------------------------------------------

def test_a_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    (data / "b").mkdir()
    for i in range(5):  # 16-bit gray 20000 means 20000/65535 = byte 78 (clipped: 255)
        Image.fromarray(np.full((4, 4), 20000, np.uint16)).save(data / "b" / f"{i}.png")
    result = run(tmp_path, data)
    assert pixels(tmp_path)[1] == {78}
    assert result.stats["converted_16_bit"] == 5
    assert "converted 5 files (16 bit 5)" in result_figure(result.stats)


def test_transparency_is_composited_onto_black_and_said(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    (data / "b").mkdir()
    for i in range(5):  # white under alpha 0: black once composited (dropping alpha: white)
        Image.new("LA", (4, 4), (255, 0)).save(data / "b" / f"{i}.png")
    result = run(tmp_path, data)
    assert pixels(tmp_path)[1] == {0}
    assert result.stats["converted_transparency"] == 5


def test_a_palette_with_a_transparent_index_is_composited(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    (data / "b").mkdir()
    for i in range(5):
        image = Image.new("P", (4, 4), 1)
        image.putpalette([0, 0, 0, 200, 200, 200] + [0] * 762)
        image.save(data / "b" / f"{i}.png", transparency=1)
    result = run(tmp_path, data, channels=1)
    assert pixels(tmp_path)[1] == {0}
    assert result.stats["converted_transparency"] == 5


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "imgs"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(5):  # stored 8 wide x 4 high, shown rotated: 4 wide x 8 high
            image = Image.new("L", (8, 4), 0)
            image.putpixel((0, 0), 255)
            exif = Image.Exif()
            exif[0x0112] = 6  # rotate 90 degrees clockwise to show
            image.save(data / name / f"{i}.jpg", exif=exif.tobytes(), quality=100)
    result = run(tmp_path, data)
    assert result.image_shape == (8, 4, 1)  # height 8, width 4: as shown
    assert result.stats["converted_exif_orientation"] == 10


def test_a_cmyk_jpeg_and_an_animated_gif_are_converted_and_said(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "imgs"
    (data / "a").mkdir(parents=True)
    (data / "b").mkdir(parents=True)
    for i in range(5):
        Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(data / "a" / f"{i}.jpg")  # white
        frames = [Image.new("L", (4, 4), v) for v in (60, 200)]
        frames[0].save(data / "b" / f"{i}.gif", save_all=True, append_images=frames[1:])
    result = run(tmp_path, data, channels=1)
    seen = pixels(tmp_path)
    assert seen[0] == {255} and seen[1] == {60}  # the first frame
    assert result.stats["converted_cmyk"] == 5
    assert result.stats["converted_first_frame"] == 5


def test_float_pixels_of_unknown_range_are_skipped_and_counted(tmp_path: Path) -> None:
    from PIL import Image

    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    class_folder(data, "b", 90)
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(data / "b" / "f.tif")
    result = run(tmp_path, data)
    assert result.stats["skipped_pixels_of_unknown_range"] == 1
    assert "skipped 1 files (pixels of unknown range 1)" in result_figure(result.stats)


# ---- folder layouts -------------------------------------------------------------------------

@pytest.mark.parametrize(("layout", "pattern"), [
    ("val", r"a val/ folder: preprocess takes validation from train/"),
    ("test-only", r"test/ without train/"),
    ("mixed", r"split folders \(train\) next to other folders \('cat'\)"),
    ("nested", r"class folder 'animals' holds a folder \('cat'\); .*nested class folders"),
    ("empty-class", r"class folder 'dog' has no image files"),
    ("test-class-not-in-train", r"test/ has class 'c' that train/ does not"),
    ("control-character", r"class folder 'b\\n' has control characters"),
    ("two-spellings", r"both Train/ and train/; keep one"),
    ("images-directly-in-train", r"train/ holds images directly"),
])
def test_a_layout_it_cannot_read_as_meant_is_refused(tmp_path: Path, layout: str,
                                                     pattern: str) -> None:
    data = tmp_path / "imgs"
    if layout == "val":
        for split in ("train", "val"):
            class_folder(data / split, "a", 10)
            class_folder(data / split, "b", 90)
    elif layout == "test-only":
        class_folder(data / "test", "a", 10)
        class_folder(data / "test", "b", 90)
    elif layout == "mixed":
        class_folder(data / "train", "a", 10)
        class_folder(data, "cat", 90)
    elif layout == "nested":
        class_folder(data / "animals", "cat", 10)
        class_folder(data, "plants", 90)
    elif layout == "empty-class":
        class_folder(data, "cat", 10)
        class_folder(data, "emu", 90)
        (data / "dog").mkdir()
        (data / "dog" / "notes.txt").write_text("no images")
    elif layout == "test-class-not-in-train":
        for name in ("a", "b"):
            class_folder(data / "train", name, 10)
        class_folder(data / "test", "c", 10)
    elif layout == "control-character":
        class_folder(data, "a", 10)
        class_folder(data, "b\n", 90)
    elif layout == "two-spellings":
        for split in ("Train", "train"):
            class_folder(data / split, "a", 10)
            class_folder(data / split, "b", 90)
    elif layout == "images-directly-in-train":
        class_folder(data, "train", 10)
        class_folder(data / "test", "a", 90)
    refused(tmp_path, data, pattern)


def test_split_folders_are_found_whatever_their_case(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    for split, n in (("Train", 6), ("TEST", 3)):
        class_folder(data / split, "a", 10, n)
        class_folder(data / split, "b", 90, n)
    result = run(tmp_path, data)
    assert result.stats["fixed_test_split"] is True and result.test.num_examples == 6


def test_skipped_entries_are_counted_in_the_one_line(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    class_folder(data, "b", 90)
    (data / "a" / ".DS_Store").write_bytes(b"hidden")
    os.symlink(tmp_path / "gone.png", data / "b" / "dangling.png")
    (data / "b" / "notes.txt").write_text("not an image")
    (data / "README.md").write_text("outside the classes")
    (data / "b" / "broken.png").write_bytes(b"not a png")
    result = run(tmp_path, data)
    figure = result_figure(result.stats)
    assert result.stats["rows_kept"] == 10
    assert ("skipped 5 files (unreadable files 1, broken links 1, files outside classes 1, "
            "hidden 1, other files 1)") in figure, figure


def test_a_fifo_among_the_images_is_refused_without_blocking(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    class_folder(data, "b", 90)
    os.mkfifo(data / "b" / "pipe.png")
    outcome: list[BaseException] = []
    worker = threading.Thread(target=lambda: outcome.extend(_error(tmp_path, data)), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "preprocess blocked on a FIFO"
    assert re.search(r"pipe\.png: is a FIFO \(named pipe\), not a regular file", str(outcome[0]))


def _error(tmp_path: Path, data: Path) -> list[BaseException]:
    try:
        run(tmp_path, data)
    except InputError as exc:
        return [exc]
    return [AssertionError("no error")]


def test_a_class_with_no_readable_image_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    class_folder(data, "c", 200)
    (data / "b").mkdir()
    (data / "b" / "x.png").write_bytes(b"damaged")
    refused(tmp_path, data, r"class 'b' has no readable image \(all its files were skipped: "
                            r"unreadable_files\)")


# ---- tables: classes that vanish ----------------------------------------------------------

def write_table(path: Path, labels: list[int], pixel_rows: np.ndarray) -> Path:
    import pandas as pd

    frame = pd.DataFrame(pixel_rows, columns=[f"pixel{i}" for i in range(pixel_rows.shape[1])])
    frame.insert(0, "label", labels)
    frame.to_csv(path, index=False)
    return path


def test_a_class_whose_rows_were_all_dropped_is_refused(tmp_path: Path) -> None:
    labels = [0, 1, 2] * 6
    rows = np.full((18, 4), 7.0)
    rows[2::3, 1] = np.nan  # every row of class 2 (the highest) has a missing pixel
    data = write_table(tmp_path / "t.csv", labels, rows)
    refused(tmp_path, data, r"class 2: all its 6 rows were dropped")


def test_a_class_number_no_row_has_is_refused(tmp_path: Path) -> None:
    data = write_table(tmp_path / "t.csv", [0, 2] * 9, np.full((18, 4), 7))
    refused(tmp_path, data, r"class 1 has no rows but labels go up to 2")


# ---- class names between data and models ----------------------------------------------

def test_class_names_must_match_not_only_their_count() -> None:
    check_class_names("m", ["cat", "dog"], ("cat", "dog"), "hint")
    check_class_names("m", None, ("cat", "dog"), "hint")  # a model without names: nothing to say
    with pytest.raises(InputError, match=r"m: class 0 is 'dog' in the model but 'cat' in the "
                                         r"data \(the same names in another order\)"):
        check_class_names("m", ["dog", "cat"], ("cat", "dog"), "hint")
    with pytest.raises(InputError, match=r"class 1 is 'dog' in the model but 'emu'"):
        check_class_names("m", ["cat", "dog"], ("cat", "emu"), "hint")


def names_only_model(folder: Path) -> Path:
    """A Model folder whose model.json names classes dog, cat and has no model.keras: the
    names must be refused before any model is loaded."""
    import json

    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({
        "format": "tbpipe.model.v1", "image_shape": [4, 4, 1], "num_classes": 2,
        "class_names": ["dog", "cat"]}))
    return folder


def test_finetune_and_promotion_compare_names_before_loading_the_model(tmp_path: Path) -> None:
    from tbpipe.components.common.model_format import load_fitting_model

    folder = names_only_model(tmp_path / "model")
    with pytest.raises(InputError, match=r"model: class 0 is 'dog' in the model but 'cat'"):
        load_fitting_model(str(folder), (4, 4, 1), 2, "hint", class_names=("cat", "dog"))


def test_evaluate_compares_names_before_loading_the_model(tmp_path: Path) -> None:
    """Standalone evaluate checks names as finetune and promote do (before: scored anyway)."""
    import json

    from tbpipe.components.common.dataset import DatasetWriter
    from tbpipe.components.evaluation.config import EvaluateConfig
    from tbpipe.components.evaluation.core import evaluate_model

    folder = names_only_model(tmp_path / "model")
    writer = DatasetWriter(str(tmp_path / "test"), (4, 4, 1), 2)
    writer.write(np.zeros((4, 4, 4, 1), np.uint8), np.array([0, 1, 0, 1]))
    writer.class_names = ("cat", "dog")
    writer.close()

    def evaluate() -> None:
        evaluate_model(str(folder), str(tmp_path / "test"), str(tmp_path / "report.md"),
                       str(tmp_path / "logs"), EvaluateConfig())

    with pytest.raises(InputError) as refused:
        evaluate()
    line = str(refused.value)
    assert line.startswith(f"{folder}: class 0 is 'dog' in the model but 'cat' in the data "
                           "(the same names in another order) (model: ['dog', 'cat'], "
                           "data: ['cat', 'dog'])"), line
    assert "\n" not in line
    (folder / "model.json").write_text(json.dumps({
        "format": "tbpipe.model.v1", "image_shape": [4, 4, 1], "num_classes": 2,
        "class_names": ["cat", "dog"]}))
    with pytest.raises(InputError, match="cannot load the Keras model"):  # names pass
        evaluate()


def test_the_step_line_tbpipe_run_shows_names_what_was_skipped_and_converted(
        tmp_path: Path, capsys) -> None:
    from kfp.dsl import Dataset, Metrics
    from PIL import Image

    from tbpipe.components import preprocess
    from tbpipe.components.common.progress import parse

    data = tmp_path / "imgs"
    class_folder(data, "a", 10)
    class_folder(data, "b", 90)
    Image.fromarray(np.full((4, 4), 20000, np.uint16)).save(data / "b" / "deep.png")
    (data / "a" / ".hidden.png").write_bytes(b"x")
    out = tmp_path / "out"
    preprocess.python_func(
        data=str(data), train_data=Dataset(uri=str(out / "train")),
        val_data=Dataset(uri=str(out / "val")), test_data=Dataset(uri=str(out / "test")),
        stats=Metrics(uri=str(out / "stats")), log_root=str(tmp_path / "logs"),
        experiment="exp", run_name="r1", job_name="job")
    events = [e for line in capsys.readouterr().out.splitlines() if (e := parse(line))]
    (figure,) = [e["figure"] for e in events if e["event"] == "result"]
    assert figure.startswith("kept 11 examples (")
    assert "skipped 1 files (hidden 1)" in figure and "converted 1 files (16 bit 1)" in figure


def test_predict_reads_a_file_as_training_does(tmp_path: Path) -> None:
    from PIL import Image

    from tbpipe.components.common.serving import read_image

    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 20000, np.uint16)).save(deep)
    clear = tmp_path / "clear.png"
    Image.new("LA", (4, 4), (255, 0)).save(clear)
    assert (read_image(str(deep), (4, 4, 1)) == 78).all()  # as preprocess reads it
    assert (read_image(str(clear), (4, 4, 1)) == 0).all()
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(InputError, match=r"pipe\.png: is a FIFO"):
        read_image(str(tmp_path / "pipe.png"), (4, 4, 1))
    with pytest.raises(InputError, match=r"damaged"):
        (tmp_path / "bad.png").write_bytes(b"nope")
        read_image(str(tmp_path / "bad.png"), (4, 4, 1))
