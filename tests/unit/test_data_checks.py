"""check-data: copies between splits by perceptual hash, data health, drift, reports and logs."""

import io
import json
import re

import numpy as np
import pytest

from tbpipe.components.common.dataset import DatasetWriter
from tbpipe.components.data_checks.config import DataChecksConfig
from tbpipe.components.data_checks.core import DataCheckFailed, check_datasets
from tbpipe.components.data_checks.drift import mmd_permutation_test
from tbpipe.components.data_checks.hashing import (
    exact_keys,
    matches,
    nearest,
    perceptual_hashes,
)
from tests.helpers import read_scalars, read_tags, read_text

SIDE = 32
NEAR = DataChecksConfig().near_distance


def scenes(n, seed=0, side=SIDE):
    """Distinct grayscale images: a few random bright ellipses and bars on a dark ground."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    out = np.empty((n, side, side, 1), np.uint8)
    for k in range(n):
        image = np.full((side, side), 20.0)
        for _ in range(3):
            (cy, cx), (ry, rx) = rng.uniform(0.15, 0.85, 2), rng.uniform(0.08, 0.3, 2)
            image[((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 < 1] = rng.uniform(120, 230)
        out[k, ..., 0] = np.clip(image + rng.normal(0, 4, image.shape), 0, 255)
    return out


def resized(image, side=20):
    from PIL import Image

    small = Image.fromarray(image[..., 0]).resize((side, side), Image.BILINEAR)
    return np.asarray(small.resize((SIDE, SIDE), Image.BILINEAR))[..., None]


def reencoded(image, quality=60):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())))[..., None]


def brightened(image, by=25):
    return np.clip(image.astype(np.int16) + by, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def originals():
    return scenes(24)


@pytest.mark.parametrize("copy", [resized, reencoded, brightened], ids=lambda f: f.__name__)
def test_the_hash_finds_near_copies_and_exact_ones(originals, copy):
    copies = np.stack([copy(image) for image in originals[:8]])
    exact, near, distance, _ = matches(exact_keys(np.concatenate([originals[8:10], copies])),
                                    perceptual_hashes(np.concatenate([originals[8:10],
                                                                      copies])),
                                    exact_keys(originals), perceptual_hashes(originals), NEAR)
    assert exact.tolist() == [True, True] + [False] * 8
    assert near.tolist() == [False, False] + [True] * 8, distance
    assert distance[:2].tolist() == [0, 0]


def test_the_batched_hash_is_imagehashs_phash(originals):
    """At 32x32 (no resize) bit for bit; resized from 28x28, within a few bits."""
    import imagehash
    from PIL import Image

    def reference(images):
        return np.array([int(np.packbits(imagehash.phash(Image.fromarray(image[..., 0]))
                                         .hash.ravel()).view(">u8")[0]) for image in images],
                        dtype=np.uint64)

    assert (perceptual_hashes(originals) == reference(originals)).all()
    small = np.stack([resized(image, 28)[2:30, 2:30] for image in originals])
    assert np.bitwise_count(perceptual_hashes(small) ^ reference(small)).max() <= 8
    colour = np.repeat(originals, 3, axis=-1)
    assert (perceptual_hashes(colour) == perceptual_hashes(originals)).all()


def test_distinct_images_are_not_copies(originals):
    hashes = perceptual_hashes(originals)
    distance, position = nearest(hashes[:12], hashes[12:])
    assert (distance > NEAR).all(), distance
    # and the index finds each hash itself when it holds it
    assert nearest(hashes[:5], hashes)[1].tolist() == [0, 1, 2, 3, 4]
    assert nearest(hashes[:2], hashes[:0])[1].tolist() == [-1, -1]


def test_mmd_same_distribution_high_p_shifted_low_p_and_seeded():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(150, 8)), rng.normal(size=(150, 8))
    shifted = rng.normal(0.6, 1.0, size=(150, 8))
    same = mmd_permutation_test(x, y, permutations=200, seed=1)
    moved = mmd_permutation_test(x, shifted, permutations=200, seed=1)
    assert same[1] > 0.1 and moved[1] < 0.01, (same, moved)
    assert moved[0] > same[0]
    assert mmd_permutation_test(x, y, permutations=200, seed=1) == same


def write(root, images, labels, classes=3):
    writer = DatasetWriter(str(root), images.shape[1:], classes)
    writer.write(images, labels)
    return writer.close()


@pytest.fixture
def leaky(tmp_path, originals):
    """train: 20 scenes; test: 2 exact copies, 1 brightened copy, 3 new scenes; val: 4."""
    labels = np.arange(40) % 3
    train, fresh = originals[:20], scenes(7, seed=5)
    test = np.concatenate([train[:2], brightened(train[2:3]), fresh[:3]])
    write(tmp_path / "train", train, labels[:20])
    write(tmp_path / "val", fresh[3:7], labels[:4])
    write(tmp_path / "test", test, labels[:6])
    return {name: str(tmp_path / name) for name in ("train", "val", "test")}


def run_checks(tmp_path, data, mode):
    log_dir = tmp_path / "logs" / "check-data"
    paths = [str(tmp_path / "report.md"), str(tmp_path / "report.html"), str(log_dir)]
    result = check_datasets(data["train"], data["val"], data["test"], *paths,
                            DataChecksConfig(mode=mode, run_label="e/r"))
    return result, log_dir


def test_warn_reports_copies_in_both_reports_and_the_event_files(tmp_path, leaky):
    result, log_dir = run_checks(tmp_path, leaky, "warn")
    assert (result.exact_duplicates, result.near_duplicates) == (2, 1)
    assert len(result.violations) == 1 and "leaks training data" in result.violations[0]
    assert not result.drift_checked and result.drift_p_value == 1.0
    markdown = (tmp_path / "report.md").read_text()
    page = (tmp_path / "report.html").read_text()
    for text in (markdown, page):
        assert "2 test images are exact copies of training images and 1 near" in text
        assert "no champion" in text
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page
    assert "| 0 | 0 | 0 | exact |" in markdown and "| 1 | 1 | 0 | exact |" in markdown
    assert re.search(r"\| 2 \| 2 \| [0-6] \| near \|", markdown)  # test image -> its source
    scalars = read_scalars(str(log_dir))
    assert scalars["data/exact_duplicates"] == [(0, 2.0)]
    assert scalars["data/near_duplicates"] == [(0, 1.0)]
    assert scalars["data/violations"] == [(0, 1.0)]
    histograms = read_tags(str(log_dir))["histograms"]
    assert {"data/nearest_train_distance", "data/labels/train"} <= set(histograms)
    assert "leaks training data" in read_text(str(log_dir), "data/violations")


def test_strict_fails_with_one_line_after_writing_the_reports(tmp_path, leaky):
    with pytest.raises(DataCheckFailed) as failed:
        run_checks(tmp_path, leaky, "strict")
    line = str(failed.value)
    assert "\n" not in line and line.startswith("--data-checks strict: 2 test images")
    assert "leaks training data" in (tmp_path / "report.md").read_text()


def test_off_checks_nothing_and_says_so(tmp_path, leaky):
    result, log_dir = run_checks(tmp_path, leaky, "off")
    assert result.violations == () and result.line() == "data checks off"
    assert "data checks off" in (tmp_path / "report.md").read_text()
    assert read_scalars(str(log_dir))["data/violations"] == [(0, 0.0)]


def test_empty_images_and_imbalance_are_violations_tiny_images_exact_only(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(25, 8, 8, 1), dtype=np.uint8)
    images[3] = 0  # empty
    labels = np.array([0] * 22 + [1, 2, 2])
    write(tmp_path / "train", images[:20], labels[:20])
    write(tmp_path / "val", images[20:22], labels[20:22])
    write(tmp_path / "test", np.concatenate([images[22:], images[5:6]]), labels[21:25])
    data = {name: str(tmp_path / name) for name in ("train", "val", "test")}
    result, _ = run_checks(tmp_path, data, "warn")
    text = " | ".join(result.violations)
    assert "1 empty images" in text and "classes with no training example: 1, 2" in text
    assert result.exact_duplicates == 1 and result.near_duplicates == 0
    assert any("too small for a perceptual hash" in note for note in result.notes)
    assert json.dumps(result.metrics())  # plain numbers for KFP


def test_the_gate_bounds_the_drift_p_value_as_a_data_metric():
    from tbpipe.components.promotion.gate import GateError, check_gate, parse_gate
    from tests.unit.test_gate import synthetic

    gate = parse_gate("metrics: {drift_p_value: {lower_bound: 0.05}}")
    new, base = synthetic(150), synthetic(140)
    assert not check_gate(gate, new, base, {"drift_p_value": 0.01}).passed
    passed = check_gate(gate, new, base, {"drift_p_value": 0.5})
    assert passed.passed and passed.new["drift_p_value"] == 0.5
    assert check_gate(gate, new, None).passed  # not measured: 1.0, no evidence of drift
    with pytest.raises(GateError, match="drift_p_value measures the run's data"):
        parse_gate("metrics: {drift_p_value: {change: {absolute: 0, direction: higher}}}")


def test_against_a_champion_drift_label_set_and_copies_of_its_test_set(tmp_path, originals):
    """A champion in a registry, its training data and test set; new data moved and copied."""
    from tbpipe.components.common.keras_import import import_keras
    from tbpipe.components.common.model_format import save_model_folder
    from tbpipe.components.data_checks.core import champion_of
    from tbpipe.components.promotion import publish

    keras = import_keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((SIDE, SIDE, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    labels = np.arange(60) % 3
    theirs = scenes(60, seed=11)
    write(tmp_path / "their-train", theirs, labels)
    write(tmp_path / "their-test", originals[:6], labels[:6])
    save_model_folder(model, str(tmp_path / "model"), {
        "image_shape": [SIDE, SIDE, 1], "num_classes": 3,
        "train_data": str(tmp_path / "their-train")})
    registry = str(tmp_path / "registry")
    publish.publish(str(tmp_path / "model"), registry,
                    {"test_data": str(tmp_path / "their-test")}, extras={"blessing.json": b"{}"})
    champion = champion_of(registry)
    assert champion.endswith("v1")

    def checked(train, name):
        data = {}
        for split, images in (("train", train), ("val", scenes(3, seed=7)),
                              ("test", scenes(3, seed=8))):
            write(tmp_path / name / split, images, labels[:len(images)])
            data[split] = str(tmp_path / name / split)
        return check_datasets(data["train"], data["val"], data["test"],
                              str(tmp_path / name / "r.md"), str(tmp_path / name / "r.html"),
                              str(tmp_path / name / "logs"),
                              DataChecksConfig(drift_sample=60, drift_permutations=100),
                              champion)

    same = checked(scenes(60, seed=12), "same")
    assert same.drift_checked and not same.drifted and same.drift_p_value > 0.05, same
    assert same.violations == ()
    moved = checked(np.concatenate([brightened(scenes(57, seed=13), 90),
                                    reencoded(originals[0])[None], originals[1:3]]), "moved")
    assert moved.drifted and moved.drift_p_value < 0.05, moved
    assert moved.champion_test_duplicates == 3
    assert any("copies of the champion's test images" in v for v in moved.violations)
    assert "Drift (MMD" in (tmp_path / "moved" / "r.md").read_text()
    tags = read_tags(str(tmp_path / "moved" / "logs"))
    assert "data/pixels/champion/channel_0" in tags["histograms"]
    assert read_scalars(str(tmp_path / "moved" / "logs"))["data/drift_p_value"][0][1] < 0.05


def test_the_component_defaults_are_the_configs_and_auto_finetunes_on_drift():
    from tbpipe import components
    from tbpipe.components.selection.core import SAME_DATA, SKIP, finetune_plan

    inputs = components.check_data.component_spec.inputs
    config = DataChecksConfig()
    assert inputs["data_checks"].default == config.mode == "warn"
    assert inputs["seed"].default == config.seed
    assert inputs["tensorboard_url"].default == config.tensorboard_url
    assert finetune_plan("auto", True, "") == SKIP
    assert finetune_plan("auto", True, "", drifted=True) == SAME_DATA
    assert finetune_plan("never", False, "", drifted=True) == SKIP
