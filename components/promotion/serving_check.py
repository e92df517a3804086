"""The serving check before a promotion: the SavedModel, loaded fresh, answers as Keras does.

:func:`check_serving` runs ``python -m tbpipe.components.promotion.serving_check`` in a new
process (nothing of the promote step's TensorFlow state is shared, as with a server that
starts cold), bounded by ``timeout_s``. That process times ``tf.saved_model.load`` of the
Model folder's ``saved_model/1/``, runs TF Serving's warm-up requests
(``assets.extra/tf_serving_warmup_requests``) as TF Serving does when it loads a model,
then sends :data:`CHECK_BATCH` images through ``serving_default`` (uint8) and the same images
as PNG bytes through ``serving_bytes``. The promote step compares both answers with the Keras
model's probabilities (``model.keras``, the evaluate step's ``as_probabilities``): every
probability within :data:`TOLERANCE` (absolute) and the same top class. PNG is lossless and
the images have the model's size, so the bytes signature sees exactly the uint8 pixels.

A failure (the SavedModel does not load, a signature is missing or fails, an answer differs,
the process outlives ``timeout_s``) is :class:`ServingCheckFailed`, one line, and the model is
not promoted. A Model folder without a SavedModel (one not made by the select step) has nothing
to serve: the check says so (``skipped``) and the promotion goes on.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError

CHECK_TIMEOUT_S = 300.0  # loading and querying the SavedModel, TensorFlow's import included
TOLERANCE = 1e-4  # largest absolute difference of a probability, SavedModel vs Keras
CHECK_BATCH = 8
_ANSWERS = "answers.npz"
_PREFIX = "serving check: "


class ServingCheckFailed(InputError):  # noqa: N818 - reads as what happened to the model
    """The SavedModel cannot be served as the Keras model predicts: never promoted."""


@dataclasses.dataclass(frozen=True)
class ServingCheck:
    """What the serving check found (recorded in ``promotion.json``'s entry).

    Attributes:
        passed: Whether both signatures answered as the Keras model does (False: skipped).
        load_s: Seconds ``tf.saved_model.load`` took in the fresh process.
        total_s: Seconds of the whole check process (TensorFlow's import included).
        batch: Images sent through each signature.
        max_diff: Largest absolute difference from the Keras probabilities per signature.
        tolerance: The bound on it (:data:`TOLERANCE`).
        warmup_requests: Warm-up requests found and run.
        skipped: Why the check did not run ("" when it ran).

    """

    passed: bool
    load_s: float = 0.0
    total_s: float = 0.0
    batch: int = 0
    max_diff: dict[str, float] = dataclasses.field(default_factory=dict)
    tolerance: float = TOLERANCE
    warmup_requests: int = 0
    skipped: str = ""

    def line(self) -> str:
        """One line for the step's log."""
        if self.skipped:
            return f"skipped ({self.skipped})"
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in self.max_diff.items())
        return (f"passed: SavedModel loaded in {self.load_s:.2f} s in a fresh process, "
                f"{self.batch} images through each signature, max difference from Keras "
                f"{diffs} <= {self.tolerance:g}, {self.warmup_requests} warm-up requests ran")

    def as_dict(self) -> dict:
        """JSON-ready values, with the line."""
        return {**dataclasses.asdict(self), "line": self.line()}


def check_images(image_shape: tuple[int, int, int], n: int = CHECK_BATCH) -> np.ndarray:
    """Seeded uint8 images ``(n, H, W, C)``: noise, plus black and white ones."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, *image_shape), dtype=np.uint8)
    images[0], images[-1] = 0, 255
    return images


def check_serving(model_uri: str, timeout_s: float = CHECK_TIMEOUT_S) -> ServingCheck:
    """Load the Model folder's SavedModel in a fresh process and compare it with Keras.

    Args:
        model_uri: A Model folder (local, gs:// or s3://) with ``saved_model/1/``.
        timeout_s: The most the check process may take.

    Returns:
        The check, passed (or skipped: no SavedModel in the folder).

    Raises:
        ServingCheckFailed: one line naming ``model_uri`` and what failed.

    """
    from tbpipe.components.common.model_format import load_model_folder
    from tbpipe.components.common.serving import (
        BYTES_SIGNATURE,
        SIGNATURE,
        encode_png,
        saved_model_path,
    )
    from tbpipe.components.evaluation.metrics import as_probabilities

    with storage.local_input(model_uri) as local:
        saved = saved_model_path(local)
        if not os.path.isfile(os.path.join(saved, "saved_model.pb")):
            return ServingCheck(passed=False, skipped="the Model folder has no saved_model/1/")
        model, meta = load_model_folder(local, compile=False)
        shape = tuple(int(d) for d in meta["image_shape"])
        images = check_images(shape)
        expected = as_probabilities(np.asarray(model.predict_on_batch(
            images.astype(np.float32) / 255.0)))
        with tempfile.TemporaryDirectory(prefix="tbpipe-serving-check-") as tmp:
            np.save(os.path.join(tmp, "images.npy"), images)
            if shape[2] in (1, 3):
                np.save(os.path.join(tmp, "encoded.npy"),
                        np.array([encode_png(image) for image in images], dtype=object),
                        allow_pickle=True)
            answers, total_s = _run_fresh(model_uri, saved, tmp, timeout_s)
    fail = f"{model_uri}: the SavedModel failed the serving check"
    hint = "it is not promoted: rerun the select step to export it again"
    max_diff = {}
    for signature in (SIGNATURE, BYTES_SIGNATURE):
        if signature not in answers:
            if signature == BYTES_SIGNATURE and shape[2] not in (1, 3):
                continue  # no bytes signature for other channel counts
            raise ServingCheckFailed(f"{fail} (no {signature} signature); {hint}")
        got = answers[signature]
        if got.shape != expected.shape or not np.isfinite(got).all():
            raise ServingCheckFailed(f"{fail} ({signature} answered shape {got.shape}, "
                                     f"finite: {bool(np.isfinite(got).all())}; expected "
                                     f"{expected.shape}); {hint}")
        diff = float(np.abs(got - expected).max())
        same_top = bool((got.argmax(axis=1) == expected.argmax(axis=1)).all())
        if diff > TOLERANCE or not same_top:
            raise ServingCheckFailed(f"{fail} ({signature} differs from the Keras model by up "
                                     f"to {diff:.3g} > {TOLERANCE:g}); {hint}")
        max_diff[signature] = diff
    return ServingCheck(passed=True, load_s=float(answers["load_s"]), total_s=total_s,
                        batch=len(images), max_diff=max_diff,
                        warmup_requests=int(answers["warmup_requests"]))


def _run_fresh(model_uri: str, saved: str, tmp: str,
               timeout_s: float) -> tuple[dict[str, np.ndarray], float]:
    """Run :func:`main` in a new Python process; its answers and how long it took."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", __name__, saved, tmp], env=env,
                              capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ServingCheckFailed(f"{model_uri}: the SavedModel did not load and answer within "
                                 f"{timeout_s:g} s in a fresh process; it is not promoted: "
                                 "check its size, or rerun the select step") from None
    total_s = time.monotonic() - start
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(_PREFIX)]
        why = (lines[-1][len(_PREFIX):] if lines else
               (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1])
        raise ServingCheckFailed(f"{model_uri}: the SavedModel failed the serving check "
                                 f"({why[:300]}); it is not promoted: rerun the select step "
                                 "to export it again")
    with np.load(os.path.join(tmp, _ANSWERS)) as answers:
        return {key: answers[key] for key in answers.files}, total_s


def main(saved: str, tmp: str) -> None:
    """The fresh process: load ``saved``, run its warm-up requests, answer ``tmp``'s images."""
    import tensorflow as tf

    from tbpipe.components.common.serving import (
        BYTES_SIGNATURE,
        OUTPUT_KEY,
        SIGNATURE,
        WARMUP_FILE,
    )

    start = time.monotonic()
    loaded = tf.saved_model.load(saved)
    load_s = time.monotonic() - start
    signatures = loaded.signatures
    warmup = os.path.join(saved, WARMUP_FILE)
    requests = 0
    if os.path.isfile(warmup):
        from tensorflow_serving.apis import prediction_log_pb2

        for record in tf.data.TFRecordDataset(warmup):
            request = prediction_log_pb2.PredictionLog.FromString(
                record.numpy()).predict_log.request
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            signatures[request.model_spec.signature_name or SIGNATURE](**inputs)
            requests += 1
    answers = {"load_s": np.array(load_s), "warmup_requests": np.array(requests)}
    images = np.load(os.path.join(tmp, "images.npy"))
    answers[SIGNATURE] = signatures[SIGNATURE](tf.constant(images))[OUTPUT_KEY].numpy()
    encoded = os.path.join(tmp, "encoded.npy")
    if os.path.isfile(encoded) and BYTES_SIGNATURE in signatures:
        data = [bytes(b) for b in np.load(encoded, allow_pickle=True)]
        answers[BYTES_SIGNATURE] = signatures[BYTES_SIGNATURE](
            tf.constant(data, dtype=tf.string))[OUTPUT_KEY].numpy()
    np.savez(os.path.join(tmp, _ANSWERS), **answers)


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    except Exception as exc:  # noqa: BLE001 - any failure is the check's one line
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        print(f"{_PREFIX}{type(exc).__name__}: {first}", file=sys.stderr, flush=True)
        sys.exit(1)
