"""preprocess_data: cleaning, scaling, stratified reproducible splits, stats and logs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tbpipe.components.common.dataset import DatasetWriter, load_arrays, read_info
from tbpipe.components.common.errors import InputError
from tbpipe.components.preprocessing.config import PreprocessConfig
from tbpipe.components.preprocessing.core import STATS_FILE, preprocess_data
from tbpipe.components.preprocessing.split import SPLITS, StratifiedSplitter
from tests.helpers import read_scalars, read_tags, read_text
from tests.unit.test_readers import table_data, table_frame, write_csv, write_idx


def run(tmp_path: Path, data: str, name: str = "out", log: bool = False,
        **config: object):  # noqa: ANN201 - PreprocessResult
    out = tmp_path / name
    return preprocess_data(data, str(out / "train"), str(out / "val"), str(out / "test"),
                           str(out / "logs") if log else None, PreprocessConfig(**config))


def split_bytes(tmp_path: Path, name: str) -> dict[str, bytes]:
    """Every file of the three output folders, by relative path."""
    root = tmp_path / name
    return {str(p.relative_to(root)): p.read_bytes() for split in SPLITS
            for p in sorted((root / split).iterdir())}


def rows_of(folder: Path) -> Counter:
    images, labels = load_arrays(str(folder))
    return Counter((int(y), np.rint(x * 255).astype(np.uint8).tobytes())
                   for x, y in zip(images, labels, strict=True))


@pytest.fixture
def csv_uri(tmp_path: Path) -> str:
    pixels, labels = table_data(n=40, classes=4)  # 10 rows per class, 4x4 images
    return write_csv(tmp_path / "digits.csv", pixels, labels)


def test_csv_is_split_stratified_without_losing_rows(tmp_path: Path, csv_uri: str) -> None:
    result = run(tmp_path, csv_uri)
    out = tmp_path / "out"
    # 10 rows per class: round(10 * 0.2) = 2 test, round(10 * 0.1) = 1 val, 7 train.
    assert result.test.class_counts == (2, 2, 2, 2)
    assert result.val.class_counts == (1, 1, 1, 1)
    assert result.train.class_counts == (7, 7, 7, 7)
    assert read_info(str(out / "train")).num_classes == 4 == result.num_classes
    pixels, labels = table_data(n=40, classes=4)
    expected = Counter((int(y), x.tobytes()) for x, y in zip(pixels, labels, strict=True))
    assert sum((rows_of(out / s) for s in SPLITS), Counter()) == expected
    assert result.metrics["train_examples"] == 28 and result.metrics["rows_kept"] == 40


def test_same_seed_same_bytes_other_seed_other_split(tmp_path: Path, csv_uri: str) -> None:
    run(tmp_path, csv_uri, "a", seed=7)
    run(tmp_path, csv_uri, "b", seed=7)
    run(tmp_path, csv_uri, "c", seed=8)
    assert split_bytes(tmp_path, "a") == split_bytes(tmp_path, "b")
    assert rows_of(tmp_path / "a" / "test") != rows_of(tmp_path / "c" / "test")


def test_chunk_size_does_not_change_the_output(tmp_path: Path, csv_uri: str) -> None:
    run(tmp_path, csv_uri, "whole", chunk_rows=10_000)
    run(tmp_path, csv_uri, "small", chunk_rows=3)
    assert split_bytes(tmp_path, "whole") == split_bytes(tmp_path, "small")


def test_parquet_gives_the_same_output_as_csv(tmp_path: Path, csv_uri: str) -> None:
    pixels, labels = table_data(n=40, classes=4)
    run(tmp_path, write_csv(tmp_path / "digits.parquet", pixels, labels), "pq", chunk_rows=9)
    run(tmp_path, csv_uri, "csv")
    pq_files, csv_files = split_bytes(tmp_path, "pq"), split_bytes(tmp_path, "csv")
    pq_files.pop("train/stats.json"), csv_files.pop("train/stats.json")  # source differs
    assert pq_files == csv_files


def test_splitter_keeps_exact_proportions_across_blocks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = rng.choice(3, size=700, p=[0.6, 0.3, 0.1])
    images = rng.integers(0, 256, (700, 2, 2, 1), dtype=np.uint8)

    def split(name: str, cuts: list[int]) -> dict[str, tuple[int, ...]]:
        writers = {s: DatasetWriter(str(tmp_path / name / s), (2, 2, 1), 3) for s in SPLITS}
        splitter = StratifiedSplitter(writers, 0.15, 0.25, seed=1, block_rows=32)
        for part in np.split(np.arange(700), cuts):
            splitter.add(images[part], labels[part])
        splitter.finish()
        return {s: w.close().class_counts for s, w in writers.items()}

    counts = split("one", [])
    assert split("many", [1, 50, 51, 333, 650]) == counts
    assert split_bytes(tmp_path, "one") == split_bytes(tmp_path, "many")
    totals = np.bincount(labels, minlength=3)
    assert counts["test"] == tuple(int(np.floor(n * 0.25 + 0.5)) for n in totals)
    assert counts["val"] == tuple(int(np.floor(n * 0.15 + 0.5)) for n in totals)


def test_bad_rows_are_dropped_and_counted(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = table_data(n=40, classes=4)
    frame = table_frame(pixels, labels).astype(float)
    frame.loc[0, "pixel5"] = np.nan
    frame.loc[3, "pixel0"] = 256
    frame.loc[4, "pixel15"] = -0.5
    frame.to_csv(tmp_path / "dirty.csv", index=False)
    result = run(tmp_path, str(tmp_path / "dirty.csv"), chunk_rows=4)
    assert result.stats["dropped"] == {"missing": 1, "out_of_range": 2}
    assert (result.stats["rows_read"], result.stats["rows_dropped"]) == (40, 3)
    assert result.train.num_examples + result.val.num_examples + result.test.num_examples == 37
    assert "dropped 3" in capsys.readouterr().out


@pytest.mark.parametrize(("labels", "message"), [
    # Labels that are not class numbers are refused, not dropped (reliability, round 2).
    ([0, 1, -1, 2], r"label -1 \(row 3, column 'label'\) is not a class number"),
    ([0, 1, 2, 7.5], r"label 7\.5 \(row 4, column 'label'\) is not a class number"),
    ([0, np.nan, 1, 2], r"label nan \(row 2, column 'label'\) is missing"),
    ([3, 3, 3, 3], r"only class 3 is present"),
    ([0, 1, 2, 70000], r"label 70000 is above 1023 \(row 4, column 'label'\)"),
    ([0, 1, 2, 1024], r"label 1024 is above 1023 \(row 4, column 'label'\)"),
])
def test_unusable_labels_fail_and_leave_nothing(tmp_path: Path, labels: list[float],
                                                message: str) -> None:
    uri = write_csv(tmp_path / "bad.csv", np.zeros((4, 4), np.uint8), np.array(labels))
    with pytest.raises(InputError, match=rf"bad\.csv: {message}"):
        run(tmp_path, uri)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_header_only_table_is_empty(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("label,pixel0,pixel1,pixel2,pixel3\n")
    with pytest.raises(InputError, match=r"empty\.csv: the table has no rows"):
        run(tmp_path, str(tmp_path / "empty.csv"))


def test_late_failure_leaves_no_outputs_and_keeps_old_ones(tmp_path: Path, csv_uri: str) -> None:
    run(tmp_path, csv_uri)
    before = split_bytes(tmp_path, "out")
    frame = table_frame(*table_data(n=40, classes=4)).astype({"pixel2": object})
    frame.loc[37, "pixel2"] = "n/a?"
    frame.to_csv(tmp_path / "late.csv", index=False)
    with pytest.raises(InputError, match=r"late\.csv: column 'pixel2' is not numeric"):
        run(tmp_path, str(tmp_path / "late.csv"), chunk_rows=8)
    assert split_bytes(tmp_path, "out") == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test", "train", "val"]


def test_all_splits_needed_and_train_not_empty(tmp_path: Path) -> None:
    uri = write_csv(tmp_path / "tiny.csv", np.zeros((2, 4), np.uint8), np.array([0, 1]))
    with pytest.raises(InputError, match=r"tiny\.csv: the train split would get 0 of 2 rows; "
                       r"give more rows"):
        run(tmp_path, uri, val_fraction=0.3, test_fraction=0.6)


@pytest.mark.parametrize(("fractions", "message"), [
    ({"val_fraction": 0.05}, r"the val split would get 0 of 10 rows; raise val_fraction "
                             r"\(now 0\.05\)"),
    ({"val_fraction": 0.0}, r"the val split would get 0 of 10 rows"),
    ({"test_fraction": 0.05}, r"the test split would get 0 of 10 rows; raise test_fraction"),
])
def test_a_split_the_fractions_leave_empty_is_one_line(tmp_path: Path, fractions: dict,
                                                      message: str) -> None:
    uri = write_csv(tmp_path / "small.csv", np.zeros((10, 4), np.uint8), np.arange(10) % 2)
    settings = {"val_fraction": 0.4, "test_fraction": 0.4, **fractions}
    with pytest.raises(InputError, match=r"small\.csv: " + message):
        run(tmp_path, uri, **settings)
    assert not list((tmp_path / "out").glob("*"))  # nothing published, nothing half-written


@pytest.mark.parametrize(("config", "message"), [
    ({"val_fraction": -0.1}, r"val_fraction=-0\.1: must be in \[0, 1\)"),
    ({"test_fraction": 1.0}, r"test_fraction=1\.0: must be in \[0, 1\)"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, r"val_fraction \+ test_fraction"),
    ({"seed": -1}, r"seed=-1"),
    ({"seed": 2**32}, r"seed=4294967296: must be a non-negative integer up to 4294967295"),
    ({"val_fraction": float("nan")}, r"val_fraction=nan: must be a finite number"),
    ({"test_fraction": float("inf")}, r"test_fraction=inf: must be a finite number"),
    ({"chunk_rows": 0}, r"chunk_rows=0"),
    ({"image_shape": (4, 4)}, r"image_shape=\(4, 4\)"),
])
def test_bad_config_is_rejected(config: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        PreprocessConfig(**config)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_t10k_becomes_the_test_set(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(5)
    train_x, train_y = rng.integers(0, 256, (30, 6, 6)), np.arange(30) % 3
    test_x, test_y = rng.integers(0, 256, (7, 6, 6)), np.arange(7) % 3
    write_idx(tmp_path / "idx", "train", train_x, train_y, gz)
    write_idx(tmp_path / "idx", "t10k", test_x, test_y, gz)
    result = run(tmp_path, str(tmp_path / "idx"), f"o{gz}", chunk_rows=4, test_fraction=0.2)
    images, labels = load_arrays(str(tmp_path / f"o{gz}" / "test"))
    np.testing.assert_array_equal(np.rint(images[..., 0] * 255), test_x)
    np.testing.assert_array_equal(labels, test_y)
    assert result.val.class_counts == (1, 1, 1)  # round(10 * 0.1) of each train class
    assert result.train.num_examples == 27 and result.stats["fixed_test_split"]
    assert result.stats["test_fraction"] == 0.0


def test_idx_gz_and_raw_give_the_same_bytes(tmp_path: Path) -> None:
    images, labels = np.random.default_rng(2).integers(0, 256, (25, 4, 4)), np.arange(25) % 5
    write_idx(tmp_path / "raw", "train", images, labels)
    write_idx(tmp_path / "gz", "train", images, labels, gz=True)
    result = run(tmp_path, str(tmp_path / "raw"), "a")
    run(tmp_path, str(tmp_path / "gz"), "b")
    assert result.test.class_counts == (1, 1, 1, 1, 1)
    files_a, files_b = split_bytes(tmp_path, "a"), split_bytes(tmp_path, "b")
    files_a.pop("train/stats.json"), files_b.pop("train/stats.json")
    assert files_a == files_b


def test_builtin_digits_scaled_from_0_16(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    result = run(tmp_path, "builtin:digits")
    assert result.image_shape == (8, 8, 1) and result.num_classes == 10
    assert sum(info.num_examples for info in (result.train, result.val, result.test)) == 1797
    digits = load_digits()
    expected = Counter((int(y), np.rint(x / 16 * 255).astype(np.uint8).tobytes())
                       for x, y in zip(digits.data, digits.target, strict=True))
    out = tmp_path / "out"
    assert sum((rows_of(out / s) for s in SPLITS), Counter()) == expected
    assert result.stats["pixels"]["max"] == 1.0
    assert result.stats["pixels"]["mean"] == pytest.approx((digits.data / 16).mean(), abs=2e-3)


def test_stats_file_metrics_and_tensorboard_logs(tmp_path: Path, csv_uri: str) -> None:
    result = run(tmp_path, csv_uri, log=True)
    stats = json.loads((tmp_path / "out" / "train" / STATS_FILE).read_text())
    assert stats == result.stats
    assert stats["splits"]["val"]["class_counts"] == list(result.val.class_counts)
    assert all(isinstance(v, float) for v in result.metrics.values())
    assert result.metrics["pixel_mean"] == pytest.approx(
        table_data(n=40, classes=4)[0].mean() / 255)
    log_dir = str(tmp_path / "out" / "logs")
    scalars = read_scalars(log_dir)
    assert not any(tag.startswith("data/class_count") for tag in scalars)  # no 1-point charts
    table = read_text(log_dir, "data/class_counts")  # one table: a row per class
    for label in range(len(result.train.class_counts)):
        counts = [info.class_counts[label] for info in (result.train, result.val, result.test)]
        assert f"| {label} | {' | '.join(map(str, counts))} | {sum(counts)} |" in table
    assert scalars["data/rows_kept"] == [(0, 40.0)]
    tags = read_tags(log_dir)
    assert {"data/pixels", "data/labels"} <= set(tags["histograms"])
    assert tags["images"] == ["data/samples"]
    assert any(t.startswith("data/summary") for t in tags["tensors"])


# ---- data that means something else: the pixel scale, the summary line ---------------------

@pytest.mark.parametrize("name", ["unit.csv", "unit.parquet"])
def test_pixels_scaled_to_0_1_are_read_as_such(tmp_path: Path, csv_uri: str, name: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pixels, labels = table_data(n=40, classes=4)
    uri = write_csv(tmp_path / name, pixels / 255.0, labels)  # a common export: floats in [0, 1]
    result = run(tmp_path, uri, "unit", chunk_rows=7)
    run(tmp_path, csv_uri, "bytes")
    out = tmp_path / "unit"
    expected = Counter((int(y), x.tobytes()) for x, y in zip(pixels, labels, strict=True))
    assert sum((rows_of(out / s) for s in SPLITS), Counter()) == expected  # not 0s and 1s
    unit_files, byte_files = split_bytes(tmp_path, "unit"), split_bytes(tmp_path, "bytes")
    unit_files.pop("train/stats.json"), byte_files.pop("train/stats.json")
    assert unit_files == byte_files
    assert result.stats["pixel_values"]["scale_max"] == 1.0
    assert "pixel values 0..1 read as [0, 1] (byte = round(value * 255))" in \
        capsys.readouterr().out


def test_shuffled_pixel_columns_give_the_same_bytes(tmp_path: Path, csv_uri: str) -> None:
    pixels, labels = table_data(n=40, classes=4)
    frame = table_frame(pixels, labels)
    columns = list(np.random.default_rng(2).permutation(frame.columns))
    frame[columns].assign(source="scan").to_csv(tmp_path / "shuffled.csv", index=False)
    run(tmp_path, str(tmp_path / "shuffled.csv"), "shuffled")
    run(tmp_path, csv_uri, "ordered")
    shuffled, ordered = split_bytes(tmp_path, "shuffled"), split_bytes(tmp_path, "ordered")
    shuffled.pop("train/stats.json"), ordered.pop("train/stats.json")
    assert shuffled == ordered


@pytest.mark.parametrize(("unit_rows", "chunk_rows", "message"), [
    # 0..255 first: later [0, 1] rows would be quantized to 0 and 1.
    (slice(30, 40), 10, r"row 31 holds only values in \[0, 1\] with fractions \(e\.g\. "
                        r"0\.\d+ in column 'pixel\d+'\), but the table reads as 0\.\.255"),
    # the same rows in the one chunk that decides the scale
    (slice(30, 40), 10_000, r"row 31 holds only values in \[0, 1\] with fractions"),
    # [0, 1] first: a later value above 1 contradicts it.
    (slice(0, 10), 10, r"pixel value \d+ \(row 11, column 'pixel\d+'\) is above 1, but rows "
                       r"up to 10 were all in \[0, 1\]"),
])
def test_a_table_mixing_scales_is_refused(tmp_path: Path, unit_rows: slice, chunk_rows: int,
                                          message: str) -> None:
    pixels, labels = table_data(n=40, classes=4)
    frame = table_frame(pixels, labels).astype(float)
    pixel_names = [f"pixel{i}" for i in range(16)]
    frame.loc[frame.index[unit_rows], pixel_names] /= 255.0
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(InputError, match=rf"mixed\.csv: {message}.*use one scale"):
        run(tmp_path, str(tmp_path / "mixed.csv"), chunk_rows=chunk_rows)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_one_summary_line_with_pixel_range_scale_and_classes(
        tmp_path: Path, csv_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(tmp_path, csv_uri)
    lines = [line for line in capsys.readouterr().out.splitlines()
             if line.startswith("preprocess: kept")]
    pixels, _ = table_data(n=40, classes=4)
    assert lines == [
        f"preprocess: kept 40 of 40 rows, dropped 0 ({{'missing': 0, 'out_of_range': 0}}); "
        f"pixel values {pixels.min()}..{pixels.max()} read as 0..255 (byte = value); "
        "classes 0:10 1:10 2:10 3:10; split {'train': 28, 'val': 4, 'test': 8}"]
    run(tmp_path, "builtin:digits", "digits")
    assert "pixel values 0..16 read as 0..16 (byte = round(value * 255 / 16))" in \
        capsys.readouterr().out
