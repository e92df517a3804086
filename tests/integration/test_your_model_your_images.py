"""The issue's «done when»: your model on your colour image folder, then serve and predict.

``tbpipe run --data ./my-images/ --model my_model.py:build`` trains, evaluates and logs a
user's own model on a colour image folder (mixed sizes, one subfolder per class); the final
model's ``saved_model/`` loads with ``tf.saved_model.load`` and predicts what the Keras model
predicts; ``tbpipe predict`` names the class of an image file.
"""

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TBPIPE, read_tags

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MY_MODEL = '''
import keras


def build(input_shape, num_classes):
    """A user's own model: returned uncompiled, tbpipe compiles it."""
    return keras.Sequential([
        keras.Input(shape=input_shape),
        keras.layers.Conv2D(8, 3, activation="relu", name="my_conv"),
        keras.layers.GlobalAveragePooling2D(name="my_pool"),
        keras.layers.Dense(num_classes, activation="softmax", name="my_out"),
    ])
'''
COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def write_images(root, per_class=24, seed=0):
    """One subfolder per class of noisy colour squares, two sizes, PNG and JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            side = 16 if i % 3 else 20  # mixed sizes: 16x16 is the most common
            noise = rng.integers(-40, 40, (side, side, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, "RGB").save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_your_model_on_your_colour_images_then_saved_model_and_predict(tmp_path):
    import tensorflow as tf

    from tbpipe.components.common.model_format import load_model_folder

    write_images(tmp_path / "my-images")
    (tmp_path / "my_model.py").write_text(MY_MODEL)
    proc = subprocess.run([*TBPIPE, "run", "--data", "my-images", "--model", "my_model.py:build",
                           "--epochs", "4", "--learning-rate", "0.01", "--finetune", "never",
                           "--run-name", "mine", "--log-root", "logs", "--pipeline-root", "kfp"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    accuracy = float(re.search(r"test accuracy ([01]\.\d{4})", proc.stdout).group(1))
    assert accuracy > 0.6, proc.stdout[-2000:]
    best = re.search(r"final model: \w+ -> (\S+)", proc.stdout).group(1)

    tags = read_tags(str(tmp_path / "logs" / "default" / "mine" / "train"))
    assert "weights/my_conv/kernel" in tags["histograms"]  # the model's own layer names
    evaluate = read_tags(str(tmp_path / "logs" / "default" / "mine" / "evaluate"))
    assert {"eval/precision/red", "eval/recall/blue"} <= set(evaluate["scalars"])

    model, meta = load_model_folder(best, compile=False)
    assert meta["image_shape"] == [16, 16, 3] and meta["class_names"] == sorted(COLOURS)
    served = tf.saved_model.load(f"{best}/saved_model/1").signatures["serving_default"]
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    (probabilities,) = served(tf.constant(batch)).values()
    expected = model.predict_on_batch(batch.astype(np.float32) / 255.0)
    np.testing.assert_allclose(probabilities.numpy(), expected, rtol=1e-4, atol=1e-6)

    picture = tmp_path / "my-images" / "red" / "1.png"
    predicted = subprocess.run([*TBPIPE, "predict", "--model", best, str(picture)],
                               capture_output=True, text=True, timeout=300)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.startswith(f"{picture}: red "), predicted.stdout

    # `tbpipe run --model prod.keras --finetune always`: fine-tune the model you have
    prod = tmp_path / "prod.keras"
    prod.write_bytes((Path(best) / "model.keras").read_bytes())
    tuned = subprocess.run([*TBPIPE, "run", "--data", "my-images", "--model", "prod.keras",
                            "--finetune", "always", "--epochs", "1", "--finetune-epochs", "1",
                            "--run-name", "tuned", "--log-root", "logs", "--pipeline-root", "kfp"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    assert "(finetuned model)" in tuned.stdout
    started_from = [json.loads(p.read_text())["model"]
                    for p in (tmp_path / "kfp").glob("*/train/model/model.json")]
    assert sorted(started_from) == sorted(["my_model.py:build", str(prod)]), started_from
