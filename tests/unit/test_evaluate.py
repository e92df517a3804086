import base64
import io
import json
import os
import re
from html.parser import HTMLParser
from urllib.parse import unquote

import numpy as np
import pytest
from sklearn import metrics as skm
from tensorboardX.summary import compute_curve

from tbpipe.components.common.dataset import load_arrays
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.components.evaluation.config import EvaluateConfig
from tbpipe.components.evaluation.core import PR_THRESHOLDS, evaluate_model, summarize
from tbpipe.components.evaluation.metrics import (
    as_probabilities,
    class_scores,
    confusion_matrix,
    pr_curve,
    pr_histograms,
)
from tbpipe.components.evaluation.misclassified import MAX_MISTAKES, Mistake, MistakeSample
from tbpipe.components.evaluation.report import render_html_report
from tbpipe.components.selection.core import select_best, should_finetune
from tests.helpers import read_scalars, read_tags, read_text, synthetic_images, write_dataset

SHAPE = (8, 8, 1)
CLASSES = 4


def save_tiny_model(root, softmax: bool = True, epochs: int = 2) -> str:
    """A small dense classifier on 8x8x1 saved as a tbpipe model folder; returns its path."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input(SHAPE), keras.layers.Flatten(),
        keras.layers.Dense(CLASSES, activation="softmax" if softmax else None),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.02),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax),
                  metrics=["accuracy"])
    if epochs:
        images, labels = synthetic_images(64, SHAPE, CLASSES, seed=1)
        model.fit(images, labels, epochs=epochs, batch_size=32, verbose=0)
    os.makedirs(root, exist_ok=True)
    model.save(os.path.join(root, "model.keras"))
    with open(os.path.join(root, "model.json"), "w") as handle:
        json.dump({"image_shape": list(SHAPE), "num_classes": CLASSES, "epochs": epochs}, handle)
    return str(root)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def test_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "test"
    write_dataset(str(root), n=90, shape=SHAPE, classes=CLASSES, seed=7, shard_records=40)
    return str(root)


@pytest.fixture(scope="module")
def evaluated(model_dir, test_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    config = EvaluateConfig(accuracy_target=0.5, batch_size=16, run_label="exp-1/run.a")
    result = evaluate_model(model_dir, test_dir, str(out / "report.md"), str(out / "logs"),
                            config, html_report_uri=str(out / "report.html"))
    return result, out


def keras_reference(model_dir, test_dir, from_logits=False):
    """Loss, accuracy and predictions computed by Keras on the whole test set at once."""
    import keras

    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), compile=False)
    images, labels = load_arrays(test_dir)
    outputs = model.predict(images, verbose=0)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    loss = float(keras.ops.convert_to_numpy(loss_fn(labels, outputs)))
    predictions = outputs.argmax(axis=1)
    return loss, float((predictions == labels).mean()), predictions, labels


# --- metrics math -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, 300)
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, 4, 300))  # 4 never
    confusion = confusion_matrix(labels, predictions, 5)
    np.testing.assert_array_equal(confusion, skm.confusion_matrix(labels, predictions,
                                                                  labels=range(5)))
    scores = class_scores(confusion)
    p, r, f, s = skm.precision_recall_fscore_support(labels, predictions, labels=range(5),
                                                     zero_division=0)
    np.testing.assert_allclose([c.precision for c in scores], p)
    np.testing.assert_allclose([c.recall for c in scores], r)
    np.testing.assert_allclose([c.f1 for c in scores], f)
    assert [c.support for c in scores] == list(s)
    result = summarize(confusion, 0.0, 0.5)
    assert result.accuracy == pytest.approx(skm.accuracy_score(labels, predictions))
    assert result.macro_f1 == pytest.approx(skm.f1_score(labels, predictions, average="macro",
                                                         labels=range(5), zero_division=0))
    assert result.macro_precision == pytest.approx(p.mean())
    assert result.macro_recall == pytest.approx(r.mean())


def test_pr_histograms_summed_over_batches_match_tensorboardx():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), size=200)
    labels = rng.integers(0, 3, 200)
    hist = pr_histograms(labels[:70], probs[:70]) + pr_histograms(labels[70:], probs[70:])
    for k in range(3):
        expected = compute_curve(labels == k, probs[:, k], num_thresholds=PR_THRESHOLDS)
        np.testing.assert_allclose(pr_curve(hist[k]), expected)


def test_as_probabilities_softmaxes_logits_and_keeps_probabilities():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    probs = as_probabilities(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(probs.argmax(axis=1), [0, 2])
    np.testing.assert_allclose(as_probabilities(probs), probs)


# --- the whole step -----------------------------------------------------------------------

def test_evaluate_matches_keras(evaluated, model_dir, test_dir):
    result, _ = evaluated
    loss, accuracy, predictions, labels = keras_reference(model_dir, test_dir)
    assert result.num_examples == 90
    assert result.accuracy == pytest.approx(accuracy)
    assert result.loss == pytest.approx(loss, rel=1e-4)
    # The tiny model learned something but not everything, so the matrix has off-diagonals.
    assert 0.5 < result.accuracy < 1.0
    np.testing.assert_array_equal(result.confusion_matrix,
                                  skm.confusion_matrix(labels, predictions, labels=range(4)))
    assert [c.support for c in result.per_class] == list(np.bincount(labels, minlength=4))
    assert result.meets_target == (result.accuracy >= 0.5)


def test_evaluate_logits_model(tmp_path, test_dir):
    model_dir = save_tiny_model(tmp_path / "logits", softmax=False, epochs=0)
    result = evaluate_model(model_dir, test_dir, str(tmp_path / "r.md"), str(tmp_path / "logs"),
                            EvaluateConfig(accuracy_target=1.0))
    loss, accuracy, _, _ = keras_reference(model_dir, test_dir, from_logits=True)
    assert result.loss == pytest.approx(loss, rel=1e-4)
    assert result.accuracy == pytest.approx(accuracy)
    assert accuracy < 1.0  # untrained
    assert not result.meets_target
    assert "misses the target of 1.0000" in (tmp_path / "r.md").read_text()


def test_event_files_hold_every_summary(evaluated):
    result, out = evaluated
    scalars = read_scalars(str(out / "logs"))
    assert scalars["eval/accuracy"][0][1] == pytest.approx(result.accuracy)
    assert scalars["eval/loss"][0][1] == pytest.approx(result.loss)
    for k in range(CLASSES):
        for name in ("precision", "recall", "f1"):
            expected = getattr(result.per_class[k], name)
            assert scalars[f"eval/{name}/{k}"][0][1] == pytest.approx(expected)
    tags = read_tags(str(out / "logs"))
    assert "eval/confusion_matrix" in tags["images"]
    tensor_tags = set(tags["tensors"])
    assert {f"pr/{k}" for k in range(CLASSES)} <= tensor_tags
    assert {"eval/confusion_matrix/text_summary", "eval/per_class/text_summary"} <= tensor_tags


def test_report_content(evaluated):
    result, out = evaluated
    text = (out / "report.md").read_text()
    assert f"{result.accuracy:.4f}" in text
    verdict = "meets" if result.meets_target else "misses"
    assert f"{verdict} the target of 0.5000" in text
    link = tensorboard_run_url("http://127.0.0.1:6006", "exp-1/run.a")
    assert link in text
    assert "90 examples" in text
    row = "| 0 | " + " | ".join(str(v) for v in result.confusion_matrix[0]) + " |"
    assert row in text


def test_tensorboard_run_url():
    url = tensorboard_run_url("http://tb.example:6006/", "my-exp/run 1")
    base, _, label = url.partition("#scalars&regexInput=")
    assert base == "http://tb.example:6006/"
    assert "/" not in label and " " not in label
    assert unquote(label) == "my-exp/run 1"
    assert tensorboard_run_url("http://tb", "") == "http://tb/#scalars"


def test_tensorboard_run_url_under_a_path_such_as_kubeflows():
    kubeflow = "https://kf.example.com/tensorboard/kubeflow-user-jane/tbpipe"
    for base in (kubeflow, kubeflow + "/", kubeflow + "/#scalars"):
        url = tensorboard_run_url(base, "exp/r1")
        assert url == f"{kubeflow}/#scalars&regexInput=exp%2Fr1", base
    assert tensorboard_run_url("https://kf/tb/?auth=1", "e/r") == \
        "https://kf/tb/?auth=1#scalars&regexInput=e%2Fr"


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [-0.1, 1.5, float("nan")])
def test_bad_target(model_dir, test_dir, tmp_path, target):
    with pytest.raises(InputError, match="accuracy_target"):
        evaluate_model(model_dir, test_dir, str(tmp_path / "r.md"), str(tmp_path / "logs"),
                       EvaluateConfig(accuracy_target=target))
    assert not (tmp_path / "r.md").exists()


def test_not_a_model_folder(test_dir, tmp_path):
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "model.json").write_text("{}")
    (bogus / "model.keras").write_text("not a zip")
    for folder in (bogus, tmp_path / "missing"):
        with pytest.raises(InputError, match="not a tbpipe Model|cannot load the Keras") as err:
            evaluate_model(str(folder), test_dir, str(tmp_path / "r.md"), str(tmp_path / "l"),
                           EvaluateConfig())
        assert str(folder) in str(err.value)
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("shape,classes,match", [((6, 6, 1), 4, "images are"),
                                                 ((8, 8, 3), 4, "images are"),
                                                 ((8, 8, 1), 3, "classes")])
def test_data_that_does_not_fit_the_model(model_dir, tmp_path, shape, classes, match):
    data = tmp_path / "data"
    write_dataset(str(data), n=12, shape=shape, classes=classes)
    with pytest.raises(InputError, match=match):
        evaluate_model(model_dir, str(data), str(tmp_path / "r.md"), str(tmp_path / "logs"),
                       EvaluateConfig())


# --- decisions ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode,meets,expected", [
    ("auto", True, False), ("auto", False, True), ("always", True, True),
    ("always", False, True), ("never", True, False), ("never", False, False)])
def test_should_finetune(mode, meets, expected):
    assert should_finetune(mode, meets) is expected


def test_should_finetune_unknown_mode():
    with pytest.raises(InputError, match="sometimes"):
        should_finetune("sometimes", True)


def test_select_best():
    base = ("trained", "gs://b/m1", 0.91)
    tuned = ("finetuned", "gs://b/m2", 0.93)
    assert select_best([base, tuned]) == tuned
    assert select_best([tuned, base]) == tuned
    assert select_best([base, ("finetuned", "gs://b/m2", 0.91)]) == base
    with pytest.raises(InputError):
        select_best([])


# --- class names --------------------------------------------------------------------------

NAMES = ["cat", "dog", "red fox", "a|b"]


@pytest.fixture(scope="module")
def named(model_dir, tmp_path_factory):
    """An evaluation on a test Dataset whose manifest names its classes."""
    root = tmp_path_factory.mktemp("named")
    test = str(root / "test")
    write_dataset(test, n=40, shape=SHAPE, classes=CLASSES, seed=7)
    manifest = json.loads((root / "test" / "dataset.json").read_text())
    (root / "test" / "dataset.json").write_text(json.dumps({**manifest, "class_names": NAMES}))
    result = evaluate_model(model_dir, test, str(root / "report.md"), str(root / "logs"),
                            EvaluateConfig(accuracy_target=0.5, batch_size=16))
    return result, root


def test_class_names_in_result_tags_and_report(named):
    result, root = named
    assert result.names == tuple(NAMES)
    scalars = read_scalars(str(root / "logs"))
    for name, tag in zip(NAMES, ["cat", "dog", "red_fox", "a_b"], strict=True):
        k = NAMES.index(name)
        assert scalars[f"eval/precision/{tag}"][0][1] == pytest.approx(
            result.per_class[k].precision)
    assert not any(tag.startswith("eval/f1/") and tag[-1].isdigit() for tag in scalars)
    tags = read_tags(str(root / "logs"))
    assert {"pr/cat", "pr/dog", "pr/red_fox", "pr/a_b"} <= set(tags["tensors"])
    text = (root / "report.md").read_text()
    assert "| true \\ predicted | cat | dog | red fox | a\\|b |" in text
    row = "| red fox | " + " | ".join(str(v) for v in result.confusion_matrix[2]) + " |"
    assert row in text
    assert "| cat | " in text.split("## Per class")[1].split("## Confusion")[0]


def test_confusion_image_carries_the_labels(named):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tbpipe.components.evaluation.report import labeled_heatmap

    _, root = named
    acc = EventAccumulator(str(root / "logs"), size_guidance={"images": 0})
    acc.Reload()
    (image,) = acc.Images("eval/confusion_matrix")
    assert image.width == image.height > CLASSES * 20  # the matrix plus the label margins
    rows = np.eye(CLASSES)
    labelled = labeled_heatmap(rows, NAMES)
    plain = labeled_heatmap(rows, ["", "", "", ""])
    assert labelled.shape[0] == 3 and labelled.dtype == np.float32
    assert labelled.shape[1] > plain.shape[1]  # wider margin for longer names
    margin = labelled.shape[1] - CLASSES * 20
    assert (labelled[:, margin:, :margin] < 0.5).any()  # ink left of the rows
    assert (labelled[:, :margin, margin:] < 0.5).any()  # ink above the columns


def test_class_names_fall_back_to_the_model_then_indices(test_dir):
    from tbpipe.components.evaluation.core import class_names_for

    named_model = {"image_shape": list(SHAPE), "num_classes": CLASSES, "class_names": NAMES}
    assert class_names_for(test_dir, named_model) == tuple(NAMES)
    assert class_names_for(test_dir, {"num_classes": CLASSES}) == ("0", "1", "2", "3")
    wrong_count = {**named_model, "class_names": NAMES[:2]}
    assert class_names_for(test_dir, wrong_count) == ("0", "1", "2", "3")
    assert summarize(np.eye(2, dtype=np.int64), 0.0, 0.5).names == ("0", "1")


# --- the HTML report and the misclassified images ------------------------------------------

class _Page(HTMLParser):
    """The parts of the HTML report the tests look at: images, table rows, links."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.links, self._row = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "tr":
            self._row = []
        elif tag in ("link", "script") or (tag == "a" and attrs.get("href")):
            self.links.append((tag, attrs))

    def handle_endtag(self, tag):
        if tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._row is not None:
            self._row.append(data)


def decoded_png(src):
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src[len(prefix):]))))


def test_html_report_shows_scores_confused_pairs_and_misclassified_images(evaluated,
                                                                          test_dir):
    result, out = evaluated
    page = _Page()
    page.feed((out / "report.html").read_text())
    wrong = result.num_examples - int(np.trace(result.confusion_matrix))
    assert 0 < wrong <= MAX_MISTAKES  # the tiny model errs, on fewer than the limit
    assert len(page.images) == wrong
    images, labels = load_arrays(test_dir)
    for img in page.images:  # each thumbnail is the test image it names, with its labels
        index, true, predicted = re.fullmatch(r"example (\d+): (\S+) predicted as (\S+)",
                                              img["alt"]).groups()
        pixels = decoded_png(img["src"])
        np.testing.assert_array_equal(pixels, np.rint(images[int(index), :, :, 0] * 255))
        assert int(true) == labels[int(index)] != int(predicted)
    per_class = [row for row in page.rows if len(row) == 5 and row[0] != "class"]
    assert [float(row[3]) for row in per_class] == pytest.approx(
        [s.f1 for s in result.per_class], abs=1e-4)
    confused = [row for row in page.rows if len(row) == 4 and row[0] != "true"]
    cells = {(int(r[0]), int(r[1])): int(r[2]) for r in confused}
    off = [(t, p, n) for t, row in enumerate(result.confusion_matrix)
           for p, n in enumerate(row) if t != p and n]
    assert cells == {(t, p): n for t, p, n in off}  # few classes: every confused pair
    assert [tag for tag, _ in page.links] == ["a"]  # nothing to fetch: one file


def test_misclassified_grid_and_table_in_event_files(evaluated):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, out = evaluated
    acc = EventAccumulator(str(out / "logs"), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    (grid,) = acc.Images("eval/misclassified")
    wrong = result.num_examples - int(np.trace(result.confusion_matrix))
    tiles = min(wrong, 8) * (56 + 6)  # tensorboardX's grid: 8 a row of 56-px images + edges
    assert grid.width >= tiles and grid.height > 56
    text = read_text(str(out / "logs"), "eval/misclassified")
    assert f"{wrong} of {wrong} misclassified" in text


def test_mistake_sample_keeps_the_surest_mistakes_whatever_the_batches():
    rng = np.random.default_rng(0)
    n, k = 300, 5
    images = rng.integers(0, 256, (n, 100, 40, 3), dtype=np.uint8)
    labels = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    probs[10] = probs[20] = probs[30]  # ties: the earlier example first
    predicted = probs.argmax(axis=1)
    wrong = [i for i in range(n) if predicted[i] != labels[i]]
    expected = sorted(wrong, key=lambda i: (-probs[i, predicted[i]], i))[:7]
    for batch in (1, 16, 300):
        sample = MistakeSample(limit=7, side=20)
        for start in range(0, n, batch):
            sample.add(images[start:start + batch], labels[start:start + batch],
                       probs[start:start + batch], start)
        kept = sample.mistakes()
        assert [m.index for m in kept] == expected
        assert sample.total == len(wrong)
        assert all(m.thumbnail.shape == (20, 8, 3) and m.thumbnail.dtype == np.uint8
                   for m in kept)  # scaled down, the aspect kept: no full image is held
    two_channels = MistakeSample(limit=1, side=64)
    two_channels.add(images[:, :9, :9, :2], labels, probs, 0)
    assert two_channels.mistakes()[0].thumbnail.shape == (9, 9, 1)
    none = MistakeSample(limit=0)
    none.add(images, labels, probs, 0)
    assert none.mistakes() == () and none.total == len(wrong)


def test_html_report_escapes_names_and_says_when_nothing_is_wrong():
    hostile = ["<script>alert(1)</script>", 'a"b&c']
    config = EvaluateConfig(run_label="exp/<run>")
    confused = summarize(np.array([[3, 1], [0, 4]]), 1.0, 0.5, tuple(hostile))
    mistake = Mistake(5, 0, 1, 0.9, np.zeros((4, 4, 1), np.uint8))
    page = render_html_report(confused, [mistake], 1, "m<1>", "t&2", {}, config)
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a&quot;b&amp;c" in page and "m&lt;1&gt;" in page and "t&amp;2" in page
    assert "<title>Evaluation of exp/&lt;run&gt;</title>" in page
    perfect = summarize(np.array([[3, 0], [0, 4]]), 1.0, 0.5, ("x", "y"))
    page = render_html_report(perfect, [], 0, "m", "t", {}, config)
    assert "No test example was misclassified." in page and "<img" not in page

