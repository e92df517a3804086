"""Image folders as preprocess input: sizes, channels, class names, unreadable files, layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tbpipe.components.common.dataset import iter_shards, read_info
from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.preprocessing.config import PreprocessConfig
from tbpipe.components.preprocessing.core import preprocess_data
from tests.helpers import read_scalars, read_text


def save(path: Path, size: tuple[int, int], mode: str = "L", value: int = 128,
         fmt: str | None = None) -> None:
    """Write one image of ``size`` (width, height) filled with ``value``."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fill = value if mode == "L" else (value, 255 - value, 0)[:len(mode)] + (255,) * (
        len(mode) - 3)
    Image.new(mode, size, fill).save(path, format=fmt)


def run(tmp_path: Path, data: Path, log: bool = False, **config: object):  # noqa: ANN201
    out = tmp_path / "out"
    return preprocess_data(str(data), str(out / "train"), str(out / "val"), str(out / "test"),
                           str(out / "logs") if log else None,
                           PreprocessConfig(val_fraction=0.2, test_fraction=0.2, **config))


def all_labels(root: Path) -> list[int]:
    return [int(v) for _, labels in iter_shards(str(root)) for v in labels]


def mixed_folder(root: Path) -> Path:
    """Classes 'cat' (grayscale 8x6 PNG, one 10x10 JPEG) and 'ant' (RGBA 8x6 PNG, one BMP)
    plus a corrupt file; the most common size is width 8 x height 6."""
    for i in range(6):
        save(root / "cat" / f"c{i}.png", (8, 6), "L", 40 + i)
        save(root / "ant" / f"a{i}.png", (8, 6), "RGBA", 200)
    save(root / "cat" / "big.jpg", (10, 10), "RGB", 90)
    save(root / "ant" / "x.bmp", (5, 7), "RGB", 10)
    save(root / "ant" / "y.gif", (8, 6), "L", 20)
    (root / "cat" / "broken.png").write_bytes(b"not a png at all")
    (root / "cat" / "notes.txt").write_text("ignored: not an image suffix")
    return root


def test_image_folder_defaults_classes_and_unreadable(tmp_path: Path, capsys) -> None:
    data = mixed_folder(tmp_path / "imgs")
    result = run(tmp_path, data, log=True)
    assert result.image_shape == (6, 8, 3)  # most common size (H 6, W 8); a file is colour
    assert "image size 6x8 (the most common" in capsys.readouterr().out
    assert result.stats["unreadable_files"] == 1
    assert result.stats["rows_read"] == 15
    assert result.metrics["unreadable_files"] == 1.0
    manifest = json.loads((tmp_path / "out" / "train" / "dataset.json").read_text())
    assert manifest["class_names"] == ["ant", "cat"]
    assert manifest["label_bytes"] == 1
    assert read_info(str(tmp_path / "out" / "train")).class_names == ("ant", "cat")
    counts = [sum(info.class_counts[k] for info in (result.train, result.val, result.test))
              for k in range(2)]
    assert counts == [8, 7]  # ant: 6 PNG + BMP + GIF; cat: 6 PNG + JPEG (broken.png skipped)
    for images, _ in iter_shards(str(tmp_path / "out" / "train")):
        assert images.shape[1:] == (6, 8, 3)
    scalars = read_scalars(str(tmp_path / "out" / "logs"))
    assert not any(tag.startswith("data/class_count") for tag in scalars)  # no 1-point charts
    table = read_text(str(tmp_path / "out" / "logs"), "data/class_counts")
    ant = [info.class_counts[0] for info in (result.train, result.val, result.test)]
    assert "| class | train | val | test | all |" in table
    assert f"| ant | {' | '.join(map(str, ant))} | 8 |" in table


def test_labels_by_sorted_folder_name(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    for name, value in (("zebra", 250), ("apple", 10), ("mango", 130)):
        for i in range(5):
            save(data / name / f"{i}.png", (4, 4), "L", value)
    result = run(tmp_path, data)
    assert result.train.class_names == ("apple", "mango", "zebra")
    assert result.image_shape == (4, 4, 1)  # every file is grayscale
    for images, labels in iter_shards(str(tmp_path / "out" / "train")):
        expected = np.array([10, 130, 250])[labels]
        assert (images[:, 0, 0, 0] == expected).all()


def test_image_size_and_channels_settings(tmp_path: Path) -> None:
    data = mixed_folder(tmp_path / "imgs")
    result = run(tmp_path, data, image_size="3x5", channels=1)
    assert result.image_shape == (3, 5, 1)
    for images, _ in iter_shards(str(tmp_path / "out" / "train")):
        assert images.shape[1:] == (3, 5, 1)


@pytest.mark.parametrize(("field", "value"), [("image_size", "32"), ("image_size", "0x4"),
                                              ("channels", 2)])
def test_bad_image_settings(field: str, value: object) -> None:
    with pytest.raises(SettingError, match=field):
        PreprocessConfig(**{field: value})


def test_train_test_layout_keeps_its_test_split(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    for split, n in (("train", 6), ("test", 3)):
        for name, value in (("b", 50), ("a", 150)):
            for i in range(n):
                save(data / split / name / f"{i}.png", (4, 4), "L", value)
    result = run(tmp_path, data)
    assert result.stats["fixed_test_split"] is True
    assert result.test.class_counts == (3, 3)
    assert result.train.num_examples + result.val.num_examples == 12
    assert result.train.class_names == ("a", "b")


def test_one_class_folder_is_one_line(tmp_path: Path) -> None:
    for i in range(3):
        save(tmp_path / "imgs" / "only" / f"{i}.png", (4, 4))
    with pytest.raises(InputError, match=r"imgs: one class folder \('only'\)") as err:
        run(tmp_path, tmp_path / "imgs")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_folder_without_images_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    (tmp_path / "imgs" / "b" / "readme.txt").write_text("no images")
    with pytest.raises(InputError, match=r"imgs: no image files") as err:
        run(tmp_path, tmp_path / "imgs")
    assert "\n" not in str(err.value)


def test_no_readable_image_is_fatal(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        (tmp_path / "imgs" / name / "x.png").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"none of the 2 image files could be read"):
        run(tmp_path, tmp_path / "imgs")


def test_three_hundred_classes_write_two_byte_labels(tmp_path: Path) -> None:
    data = tmp_path / "imgs"
    for k in range(300):
        for i in range(5):
            save(data / f"c{k:03d}" / f"{i}.png", (2, 2), "L", k % 256)
    result = run(tmp_path, data, image_size="2x2")
    assert result.num_classes == 300
    assert result.train.label_bytes == 2
    assert read_info(str(tmp_path / "out" / "train")).class_names[299] == "c299"
    labels = sum((all_labels(tmp_path / "out" / s) for s in ("train", "val", "test")), [])
    assert sorted(labels) == sorted(list(range(300)) * 5)
