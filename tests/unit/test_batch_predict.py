"""Batch prediction: 10,000 files with flat memory, lists and folders, the histogram read back."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.common.serving import encode_png
from tbpipe.components.prediction.config import BatchPredictConfig
from tbpipe.components.prediction.core import iter_image_uris, serving_model
from tbpipe.components.promotion import publish
from tbpipe.components.selection.core import choose_model
from tests.helpers import synthetic_images
from tests.unit.test_evaluate import CLASSES, SHAPE, save_tiny_model

DISTINCT = 12

#: The fresh process: a warm-up run, then 1,000 files (a CSV list), then 10,000 (a folder),
#: each followed by the peak RSS so far (VmHWM): the same process, the same imports.
DRIVER = """
import json, os, sys
from tbpipe.components.prediction.config import BatchPredictConfig
from tbpipe.components.prediction.core import batch_predict_images

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

model, folder, listed, out = sys.argv[1:]
config = BatchPredictConfig(batch_size=128, output_format="csv")
batch_predict_images(model, [os.path.join(folder, "warm.png")], os.path.join(out, "w.csv"),
                     "", config)
report = {"warm": peak_mb()}
small = batch_predict_images(model, listed, os.path.join(out, "small.csv"),
                             os.path.join(out, "logs-small"), config)
report["small"] = [peak_mb(), small.images, small.failed]
large = batch_predict_images(model, folder, os.path.join(out, "large.parquet"),
                             os.path.join(out, "logs-large"),
                             BatchPredictConfig(batch_size=128, top_k=2))
report["large"] = [peak_mb(), large.images, large.failed, large.class_counts]
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-predict")
    choose_model(save_tiny_model(root / "trained"), 0.9, str(root / "best"))
    return str(root / "best")


@pytest.fixture(scope="module")
def pngs():
    """DISTINCT images as PNG bytes, and their uint8 pixels."""
    images, _ = synthetic_images(DISTINCT, SHAPE, CLASSES, seed=11)
    pixels = np.rint(images * 255).astype(np.uint8)
    return [encode_png(p) for p in pixels], pixels


def keras_classes(folder, pixels):
    import keras

    model = keras.saving.load_model(os.path.join(folder, "model.keras"), compile=False)
    return model.predict(pixels.astype(np.float32) / 255.0, verbose=0).argmax(axis=1)


def test_ten_thousand_files_stream_with_flat_memory_and_log_a_histogram(model, pngs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data, pixels = pngs
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    names = [f"sub/{i:05d}.png" if i % 2 else f"{i:05d}.png" for i in range(10_000)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(data[i % DISTINCT])
    (folder / names[3]).write_bytes(b"broken")  # one unreadable file: a row with an error
    (folder / "notes.txt").write_text("not an image: not listed")
    (folder / "warm.png").write_bytes(data[0])
    listed = tmp_path / "list.csv"
    listed.write_text("path,other\n" + "".join(f"images/{n},x\n" for n in names[:1000]))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run([sys.executable, "-c", DRIVER, model, str(folder), str(listed),
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    small_peak, small_images, small_failed = report["small"]
    large_peak, large_images, large_failed, counts = report["large"]
    assert (small_images, small_failed) == (1000, 1)
    assert (large_images, large_failed) == (10_001, 1)  # with warm.png, without notes.txt
    # flat memory: ten times the files, (almost) no more peak memory than the 1,000-file run
    assert large_peak / small_peak < 1.1, report

    import pandas as pd

    expected = keras_classes(model, pixels)
    table = pd.read_parquet(out / "large.parquet")
    assert list(table.columns) == ["path", "class_1", "probability_1", "class_2",
                                   "probability_2", "error"]
    assert len(table) == 10_001 and table["path"].is_unique
    broken = table[table["error"] != ""]
    assert list(broken["path"]) == [str(folder / names[3])]
    assert "cannot read the image" in broken["error"].iloc[0]
    good = table[table["error"] == ""]
    index = good["path"].map(lambda p: int(os.path.basename(p)[:5]) if "warm" not in p else 0)
    assert (good["class_1"].astype(int).to_numpy()
            == expected[index.to_numpy() % DISTINCT]).all()
    assert (good["probability_1"] >= good["probability_2"]).all()
    assert counts == {str(k): int((good["class_1"] == str(k)).sum()) for k in range(CLASSES)}
    with open(out / "small.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1000 and rows[0]["path"] == str(folder / names[0])

    acc = EventAccumulator(str(out / "logs-large"), size_guidance={"histograms": 0})
    acc.Reload()
    (event,) = acc.Histograms("batch_predict/top1_class")
    assert event.histogram_value.num == 10_000
    assert event.histogram_value.bucket == [counts[str(k)] for k in range(CLASSES)]
    assert event.histogram_value.bucket_limit == [k + 0.5 for k in range(CLASSES)]
    scalars = {tag: acc.Scalars(tag)[0].value for tag in acc.Tags()["scalars"]}
    assert scalars["batch_predict/images_per_s"] > 0
    assert {t: v for t, v in scalars.items() if "/count/" in t} == {
        f"batch_predict/count/{k}": counts[str(k)] for k in range(CLASSES)}


def test_sources_and_settings_that_cannot_be_used_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        list(iter_image_uris(str(tmp_path / "empty")))
    (tmp_path / "list.csv").write_text("file\na.png\n")
    with pytest.raises(InputError, match="has no column 'path'"):
        list(iter_image_uris(str(tmp_path / "list.csv")))
    import pandas as pd

    pd.DataFrame({"image": ["gs://b/x.png", "y.png"]}).to_parquet(tmp_path / "l.parquet")
    assert list(iter_image_uris(str(tmp_path / "l.parquet"), "image")) == [
        "gs://b/x.png", str(tmp_path / "y.png")]
    with pytest.raises(SettingError, match="output_format"):
        BatchPredictConfig(output_format="xlsx")
    with pytest.raises(SettingError, match="top_k"):
        BatchPredictConfig(top_k=0)


def test_a_production_folder_resolves_to_the_version_it_serves(tmp_path):
    prod = tmp_path / "production"
    prod.mkdir()
    (prod / publish.RECORD_FILE).write_text(json.dumps(
        {"format": publish.RECORD_FORMAT, "current": None, "history": []}))
    with pytest.raises(InputError, match="serves no model yet"):
        serving_model(str(prod))
    (prod / "v2").mkdir()
    (prod / publish.RECORD_FILE).write_text(json.dumps(
        {"format": publish.RECORD_FORMAT, "current": {"version": "v2"}, "history": []}))
    assert serving_model(str(prod)) == str(prod / "v2")
    assert serving_model(str(tmp_path / "model")) == str(tmp_path / "model")


def test_the_component_defaults_are_the_configs():
    import dataclasses

    from tbpipe import components

    inputs = components.batch_predict.component_spec.inputs
    fields = {f.name: f.default for f in dataclasses.fields(BatchPredictConfig)}
    shared = sorted(set(inputs) & set(fields))
    assert shared == ["batch_size", "output_format", "path_column", "read_threads", "top_k"]
    for name in shared:
        assert inputs[name].default == fields[name], name


def test_predict_output_json_streams_a_line_per_image(model, pngs, tmp_path, capsys):
    from tbpipe.pipelines.cli.main import main

    data, pixels = pngs
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(data[i])
    (tmp_path / "bad.png").write_bytes(b"no")
    status = main(["predict", "--model", model, "--output", "json", "--top", "1",
                   "--batch-size", "2", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 1 and err.count("error: ") == 1 and "bad.png" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [os.path.basename(r["path"]) for r in rows] == ["0.png", "1.png", "2.png", "bad.png"]
    assert [r["classes"] for r in rows[:3]] == [[str(k)] for k in keras_classes(model,
                                                                                pixels[:3])]
    assert rows[3]["classes"] == [] and rows[3]["error"]


def test_batch_predict_compiles_into_a_users_pipeline(tmp_path):
    import yaml
    from kfp import compiler, dsl

    from tbpipe.components import batch_predict

    @dsl.pipeline(name="score-images")
    def score(model_uri: str, images_uri: str, log_root: str):
        batch_predict(model_uri=model_uri, images_uri=images_uri, log_root=log_root,
                      output_format="csv")

    compiler.Compiler().compile(score, str(tmp_path / "p.yaml"))
    spec = yaml.safe_load((tmp_path / "p.yaml").read_text())
    outputs = spec["components"]["comp-batch-predict"]["outputDefinitions"]
    assert outputs["artifacts"]["predictions"]["artifactType"]["schemaTitle"] == \
        "system.Dataset"
    assert set(outputs["parameters"]) == {"images", "failed"}
