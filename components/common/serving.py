"""A Model for serving: a TensorFlow SavedModel export, and predictions on image files.

The SavedModel (``saved_model/1/`` in a Model folder: TensorFlow Serving, and so KServe's
``tensorflow`` runtime, wants a numbered version folder under the ``storageUri``, which is the
``saved_model/`` folder) takes what a client has, a batch of
uint8 images ``(None, H, W, C)``, scales them by 1/255 itself and returns class
probabilities ``(None, classes)`` float32 under ``probabilities`` in its
``serving_default`` signature. Its ``serving_bytes`` signature takes what an HTTP client
sends, encoded images (PNG, JPEG, GIF, BMP: a batch of strings under ``image_bytes``, which
TF Serving's and KServe's REST JSON carry as ``{"b64": ...}``), decodes each to the model's
channels and resizes it to the model's H x W (bilinear, antialiased) before the same
computation. ``assets.extra/tf_serving_warmup_requests`` holds one request per signature, which
TensorFlow Serving runs when it loads the model (so the first client does not wait for the
graph to warm up).
No kfp here; TensorFlow and PIL are imported inside the functions that use them.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tbpipe.components.common.errors import InputError, StorageError, os_errors
from tbpipe.components.common.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from tbpipe.components.common.model_format import class_names, load_model_folder, read_model_meta
from tbpipe.components.common.storage import exists, is_remote, join, read_bytes

if TYPE_CHECKING:
    import keras

SAVED_MODEL_DIR = "saved_model"
SERVING_VERSION = "1"
SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUT_KEY = "probabilities"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"


def export_saved_model(model: keras.Model, path: str, image_shape: Sequence[int]) -> None:
    """Write ``model`` as a SavedModel at the local folder ``path`` (made, must not exist).

    Its ``serving_default`` signature takes uint8 ``(None, H, W, C)`` images, divides by 255
    and returns ``{"probabilities": float32 (None, classes)}``; a model ending in logits is
    softmaxed, one already giving probabilities (rows of non-negative values summing to 1)
    is passed through, as evaluate reads it. With 1 or 3 channels it also has
    ``serving_bytes`` (encoded images in, see the module), and the folder gets TF Serving's
    warm-up requests (:func:`write_warmup_requests`).
    """
    import tensorflow as tf

    h, w, c = (int(d) for d in image_shape)
    spec = tf.TensorSpec([None, h, w, c], tf.uint8, name=IMAGES_INPUT)
    bytes_spec = tf.TensorSpec([None], tf.string, name=BYTES_INPUT)

    class Serving(tf.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.model = wrapped

        def probabilities(self, images):
            outputs = tf.cast(self.model(tf.cast(images, tf.float32) / 255.0, training=False),
                              tf.float32)
            is_prob = tf.logical_and(
                tf.reduce_all(outputs >= 0.0),
                tf.reduce_all(tf.abs(tf.reduce_sum(outputs, axis=1) - 1.0) <= 1e-3))
            probs = tf.cond(is_prob, lambda: outputs, lambda: tf.nn.softmax(outputs, axis=-1))
            return {OUTPUT_KEY: probs}

        @tf.function(input_signature=[spec])
        def serve(self, images):
            return self.probabilities(images)

        @tf.function(input_signature=[bytes_spec])
        def serve_bytes(self, image_bytes):
            return self.probabilities(decode_images(image_bytes, (h, w, c)))

    module = Serving(model)
    signatures = {SIGNATURE: module.serve}
    if c in (1, 3):
        signatures[BYTES_SIGNATURE] = module.serve_bytes
    with os_errors(path):
        tf.saved_model.save(module, path, signatures=signatures)
    write_warmup_requests(path, (h, w, c))


def decode_images(image_bytes, image_shape: Sequence[int]):  # noqa: ANN001, ANN201
    """Graph ops: a batch of encoded images (tf.string) -> uint8 ``(n, H, W, C)``.

    Each is decoded to C channels (``tf.io.decode_image``: a colour image becomes grey for a
    one-channel model, grey becomes RGB for a three-channel one; an animated GIF gives its
    first frame) and, unless it already has the model's size, resized to H x W (bilinear,
    antialiased, rounded back to uint8), the way ``tbpipe predict`` reads image files. Bytes
    that are not an image fail the request (InvalidArgumentError).
    """
    import tensorflow as tf

    h, w, c = (int(d) for d in image_shape)

    def one(data):
        image = tf.io.decode_image(data, channels=c, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, c])
        size = tf.shape(image)[:2]
        same = tf.reduce_all(tf.equal(size, tf.constant([h, w])))

        def resized():
            scaled = tf.image.resize(image, [h, w], method="bilinear", antialias=True)
            return tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, 255.0), tf.uint8)

        return tf.ensure_shape(tf.cond(same, lambda: image, resized), [h, w, c])

    return tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([h, w, c], tf.uint8))


def warmup_images(image_shape: Sequence[int], n: int = 1) -> np.ndarray:
    """Mid-grey uint8 images ``(n, H, W, C)``: the warm-up requests' input."""
    return np.full((n, *(int(d) for d in image_shape)), 128, dtype=np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    """One uint8 ``(H, W, 1 or 3)`` image as PNG bytes (Pillow)."""
    from PIL import Image

    picture = Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image,
                              "L" if image.shape[2] == 1 else "RGB")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def write_warmup_requests(path: str, image_shape: Sequence[int]) -> None:
    """Write ``{path}/assets.extra/tf_serving_warmup_requests`` for the SavedModel at ``path``.

    A TFRecord of ``tensorflow.serving.PredictionLog`` protos (tensorflow-serving-api): one
    ``PredictRequest`` of a mid-grey image for ``serving_default``, and, with 1 or 3 channels,
    the same image as PNG bytes for ``serving_bytes``.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    images = warmup_images(image_shape)
    requests = [(SIGNATURE, IMAGES_INPUT, tf.make_tensor_proto(images, dtype=tf.uint8))]
    if int(image_shape[2]) in (1, 3):
        requests.append((BYTES_SIGNATURE, BYTES_INPUT,
                         tf.make_tensor_proto([encode_png(images[0])], dtype=tf.string)))
    target = join(path, WARMUP_FILE)
    with os_errors(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with tf.io.TFRecordWriter(target) as writer:
            for signature, key, tensor in requests:
                request = predict_pb2.PredictRequest()
                request.model_spec.signature_name = signature
                request.inputs[key].CopyFrom(tensor)
                log = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request))
                writer.write(log.SerializeToString())


def export_model_folder(folder: str) -> None:
    """Add ``saved_model/1/`` to the local Model folder ``folder`` (from its ``model.keras``)."""
    model, meta = load_model_folder(folder, compile=False)
    export_saved_model(model, saved_model_path(folder), meta["image_shape"])


def saved_model_path(folder: str) -> str:
    """Where a Model folder's SavedModel is: ``{folder}/saved_model/1``."""
    return join(folder, SAVED_MODEL_DIR, SERVING_VERSION)


@dataclasses.dataclass(frozen=True)
class Predictor:
    """A loaded model: ``predict(uint8 (n, H, W, C)) -> float (n, classes)`` and its classes."""

    predict: Callable[[np.ndarray], np.ndarray]
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]


def load_predictor(uri: str) -> Predictor:
    """Load the Model folder at ``uri``: its SavedModel if it has one (local), else its Keras file.

    Raises:
        InputError: ``uri`` is not a tbpipe Model, or its model cannot be loaded.

    """
    meta = read_model_meta(uri)
    shape = tuple(int(d) for d in meta["image_shape"])
    names = tuple(class_names(meta, int(meta["num_classes"])))
    saved = saved_model_path(uri)
    if not is_remote(uri) and exists(join(saved, "saved_model.pb")):
        import tensorflow as tf

        try:
            serve = tf.saved_model.load(saved).signatures[SIGNATURE]
        except Exception as exc:  # noqa: BLE001 - tf.errors.* (corrupt variables) too
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InputError(f"{saved}: cannot load the SavedModel ({first}); "
                             "rerun the select step") from exc

        def predict(images: np.ndarray) -> np.ndarray:
            return serve(tf.constant(images, tf.uint8))[OUTPUT_KEY].numpy()

        return Predictor(predict, shape, names)
    from tbpipe.components.evaluation.metrics import as_probabilities

    model, _ = load_model_folder(uri, compile=False)

    def predict_keras(images: np.ndarray) -> np.ndarray:
        batch = images.astype(np.float32) / 255.0
        return as_probabilities(np.asarray(model.predict_on_batch(batch)))

    return Predictor(predict_keras, shape, names)


def check_image_file(path: str) -> None:
    """Refuse what is not a regular file before anything opens it (a FIFO would block).

    Raises:
        InputError: ``path`` is missing, a folder, a FIFO, a device or a socket.

    """
    import os
    import stat

    from tbpipe.components.common.regular_files import check_regular

    check_regular(path, path)  # FIFO, device, socket: one line, nothing opened
    if stat.S_ISDIR(os.stat(path).st_mode):
        raise InputError(f"{path}: is a folder, not an image file; pass the image files in it "
                         f"({os.path.join(path, '*.png')})")


def read_image(path: str, image_shape: Sequence[int]) -> np.ndarray:
    """An image file as uint8 ``(H, W, C)``, decoded as preprocess decodes it, resized.

    The same decoder as training's (``common/image_files.py``: 16-bit scaled, EXIF
    orientation, transparency onto black), so a file means the same pixels in both; a
    FIFO or device is refused before it is opened.

    At most :data:`MAX_IMAGE_PIXELS` pixels, checked before decoding (a decompression bomb
    is refused, not decoded); a truncated file is an error, not a partly grey image.

    ``path`` is a local path (decoded from the file: the header first, so the pixel check
    comes before the pixels are read), or a gs:// or s3:// object, read first into memory:
    at most :data:`MAX_IMAGE_BYTES` (one ranged read; a bigger object is refused before
    more of it is fetched).

    Raises:
        InputError: one line naming ``path`` when it cannot be read as an image.

    """
    from tbpipe.components.common.image_files import SKIP_REASONS, TOO_LARGE, decode_image

    h, w, c = (int(d) for d in image_shape)
    if c not in (1, 3):
        raise InputError(f"{path}: the model takes {c} channels; only 1 (L) or 3 (RGB) images "
                         "can be read")
    if is_remote(path):  # an object: read into memory, at most MAX_IMAGE_BYTES of it
        try:
            data = read_bytes(path, max_bytes=MAX_IMAGE_BYTES)
        except StorageError as exc:
            raise InputError(str(exc)) from exc
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f"{path}: more than {MAX_IMAGE_BYTES} bytes, the most predict "
                             "reads of an image (not an image of at most "
                             f"{MAX_IMAGE_PIXELS} pixels?); scale it down first")
        source = io.BytesIO(data)
    else:
        check_image_file(path)
        source = path
    pixels, notes = decode_image(source, h, w, c)
    if pixels is None and notes[0] == TOO_LARGE:
        raise InputError(f"{path}: more than {MAX_IMAGE_PIXELS} pixels, the most predict reads "
                         "(a decompression bomb?); scale the image down first")
    if pixels is None:
        raise InputError(f"{path}: cannot read the image ({SKIP_REASONS[notes[0]]})")
    return pixels


def top_classes(probs: np.ndarray, names: Sequence[str], top: int) -> list[tuple[str, float]]:
    """The ``top`` most probable classes of one row, highest first: ``[(name, prob)]``."""
    order = np.argsort(-probs, kind="stable")[:top]
    return [(names[k], float(probs[k])) for k in order]


def predict_files(uri: str, files: Sequence[str], top: int = 3,
                  emit: Callable[[str], None] = print,
                  emit_error: Callable[[str], None] = print) -> int:
    """Emit ``FILE: name p, name p, ...`` per file, in order; how many files failed.

    A file that cannot be read, or whose prediction is not finite (a broken model), is one
    ``error: FILE: ...`` line to ``emit_error``; the others are still classified.
    """
    if top < 1:
        raise InputError(f"top={top}: must be a positive integer")
    predictor = load_predictor(uri)
    failed = 0
    for path in files:
        try:
            pixels = read_image(path, predictor.image_shape)
            probs = predictor.predict(pixels[None])[0]
        except InputError as exc:
            emit_error(f"error: {exc}")
            failed += 1
            continue
        except Exception as exc:  # noqa: BLE001 - one file's failure must not stop the rest
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            emit_error(f"error: {path}: cannot classify it ({type(exc).__name__}: {first})")
            failed += 1
            continue
        if not np.isfinite(probs).all():
            emit_error(f"error: {path}: the model's output is NaN or infinite; the model at "
                       f"{uri} is broken (its training diverged?): retrain it")
            failed += 1
            continue
        ranked = top_classes(probs, predictor.class_names, top)
        emit(f"{path}: " + ", ".join(f"{name} {p:.3f}" for name, p in ranked))
    return failed

