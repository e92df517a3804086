"""The built-in CNN, compute precision, devices and compiling: what a fit needs of a model."""

from __future__ import annotations

import functools
import os

from tbpipe.components.common.keras_import import import_keras

keras = import_keras()

_VALID_MIN_SIDE = 10  # two (3x3 valid conv + 2x2 pool) stages need at least 10 pixels


def build_cnn(image_shape: tuple[int, int, int], num_classes: int, seed: int,
              learning_rate: float = 1e-3, *, precision: str = "float32",
              jit_compile: bool | str = "auto", steps_per_execution: int = 1) -> keras.Model:
    """Build the seed CNN, compiled: Conv32-Pool-Conv64-Pool-Flatten-Dense128-Dense(classes).

    Images with both sides of at least 10 pixels (e.g. 28x28) use ``valid`` padding; smaller
    ones (e.g. 8x8 digits) use ``same`` so both stages keep at least one pixel.

    Args:
        image_shape: ``(height, width, channels)``.
        num_classes: Output classes (softmax).
        seed: Seeds Python, numpy and TensorFlow, so the initial weights are reproducible.
        learning_rate: Adam's learning rate.
        precision: The Keras dtype policy the hidden layers compute in (``float32``,
            ``mixed_float16``, ``mixed_bfloat16``; :func:`resolve_precision` turns the
            ``auto`` setting into one). Weights and the softmax stay float32; with
            ``mixed_float16`` the loss is scaled (``LossScaleOptimizer``).
        jit_compile: XLA for the train step: ``"auto"`` (Keras: on with one GPU, off on CPU),
            True or False.
        steps_per_execution: Batches per call of the compiled train step (Keras calls the
            batch hooks once per call).

    """
    hidden = precision
    keras.utils.set_random_seed(seed)
    padding = "valid" if min(image_shape[:2]) >= _VALID_MIN_SIDE else "same"
    model = keras.Sequential([
        keras.Input(shape=tuple(image_shape)),
        keras.layers.Conv2D(32, 3, activation="relu", padding=padding, dtype=hidden),
        keras.layers.MaxPooling2D(2, padding=padding, dtype=hidden),
        keras.layers.Conv2D(64, 3, activation="relu", padding=padding, dtype=hidden),
        keras.layers.MaxPooling2D(2, padding=padding, dtype=hidden),
        keras.layers.Flatten(dtype=hidden),
        keras.layers.Dense(128, activation="relu", dtype=hidden),
        keras.layers.Dense(num_classes, activation="softmax", dtype="float32"),
    ], name="cnn")
    compile_model(model, learning_rate, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    return model


def resolve_precision(precision: str) -> str:
    """The Keras dtype policy a (validated) precision setting means.

    ``auto``: ``mixed_float16`` when TensorFlow sees a GPU; on a CPU, ``mixed_bfloat16`` if
    it has AMX-BF16 units (1.5-1.9x the float32 samples/s here, same accuracy), else
    ``float32`` (without AMX bfloat16 is no faster, or 3x slower; docs/performance.md).
    """
    if precision != "auto":
        return precision
    if visible_gpus():
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_has_amx_bf16() else "float32"


def cpu_has_amx_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has AMX-BF16 units and TensorFlow's oneDNN kernels are on to use them.

    The kernel lists ``amx_bf16`` in ``cpuinfo``'s flags only when it can run AMX.
    """
    if os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() in ("0", "false"):
        return False
    return "amx_bf16" in _cpu_flags(cpuinfo)


@functools.lru_cache(maxsize=4)
def _cpu_flags(cpuinfo: str) -> frozenset[str]:
    try:
        with open(cpuinfo) as handle:
            return frozenset(next((line for line in handle if line.startswith("flags")),
                                  "").split())
    except OSError:
        return frozenset()


def model_precision(model: keras.Model) -> str:
    """What the model's hidden layers compute in: the first layer's dtype policy name."""
    return model.layers[0].dtype_policy.name if model.layers else "float32"


def with_precision(model: keras.Model, policy: str) -> keras.Model:
    """``model`` with hidden layers in dtype ``policy`` and a float32 last layer, uncompiled.

    The model itself when it already computes so; otherwise a clone (same layers, names and
    trainable flags) holding the same float32 weights. Compile the result.
    """
    last = model.layers[-1]
    if model_precision(model) == policy and last.dtype_policy.name == "float32":
        return model

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        dtype = "float32" if layer is last else policy
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype})

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    for old, new in zip(model.layers, copy.layers, strict=True):
        new.trainable = old.trainable
    return copy


def is_mixed_precision(model: keras.Model) -> bool:
    """Whether any layer computes in float16 (``mixed_float16``: the loss needs scaling)."""
    return any(layer.dtype_policy.name == "mixed_float16" for layer in model.layers)


def visible_gpus() -> list[str]:
    """Names of the GPUs TensorFlow sees (empty on CPU-only machines)."""
    import tensorflow as tf

    return [device.name for device in tf.config.list_physical_devices("GPU")]


def pick_strategy():  # noqa: ANN201 - a tf.distribute.Strategy
    """MirroredStrategy over all GPUs when there are several, else the default strategy.

    With MirroredStrategy each batch of ``batch_size * replicas`` is split across the GPUs.
    """
    import tensorflow as tf

    if len(visible_gpus()) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def compile_model(model: keras.Model, learning_rate: float,
                  jit_compile: bool | str = "auto", steps_per_execution: int = 1) -> None:
    """Compile with Adam, sparse categorical cross-entropy and accuracy (a fresh optimizer).

    A mixed-precision model gets its Adam wrapped in a ``LossScaleOptimizer``, so small
    float16 gradients do not underflow to zero.
    """
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
    if is_mixed_precision(model):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
