"""The ranges the libraries accept, checked once where a step's settings are built.

numpy and TensorFlow take seeds in ``[0, 2**32 - 1]``; TensorFlow counts epochs, steps and
batch sizes in int32 in places (``tf.data`` batch sizes, Keras' epoch counters), so counts
stay at most ``2**31 - 1``; floats must be finite (``inf``/``nan`` pass no comparison the
user meant). Each helper raises :class:`SettingError` naming the setting and the rule.
"""

from __future__ import annotations

import math

from tbpipe.components.common.errors import SettingError

INT32_MAX = 2**31 - 1
SEED_MAX = 2**32 - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(name: str, value: object, low: int = 1) -> None:
    """An integer in ``[low, INT32_MAX]`` (``low`` 1: positive, 0: zero or positive)."""
    if not _is_int(value) or value < low:
        rule = {0: "must be 0 or a positive integer", 1: "must be a positive integer"}.get(
            low, f"must be an integer >= {low}")
        raise SettingError(name, value, rule)
    if value > INT32_MAX:
        raise SettingError(name, value, f"must be at most {INT32_MAX} (2**31-1, TensorFlow "
                           "counts it in int32)")


def check_seed(name: str, value: object) -> None:
    """An integer seed in ``[0, SEED_MAX]`` (what numpy and TensorFlow accept)."""
    if not _is_int(value) or not 0 <= value <= SEED_MAX:
        raise SettingError(name, value, f"must be a non-negative integer up to {SEED_MAX} "
                           "(2**32-1, the seeds numpy and TensorFlow accept)")


def check_finite(name: str, value: object) -> float:
    """A finite real number (not inf, not nan); returned as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        raise SettingError(name, value, "must be a finite number (not inf or nan)")
    return float(value)


# The sizes a user controls, each with its bound (docs/reliability.md, "Bounded memory").
# Beyond a bound the input is refused with one line before anything of its size is allocated.

#: Classes a data set or a model may have: evaluation's confusion matrix and per-class tables
#: grow with the square of the class count (1024**2 cells at most).
MAX_CLASSES = 1024
#: Pixels of one image, as a file's header claims it or after resizing (4096 x 4096).
MAX_IMAGE_PIXELS = 1 << 24
#: Bytes of one image object read from a store (``tbpipe predict``, ``batch_predict`` on
#: gs://, s3://...), read before it is decoded: MAX_IMAGE_PIXELS stored uncompressed at 8
#: bytes a pixel (16-bit RGBA, the widest a reader takes), plus 1 MiB of headers and metadata.
MAX_IMAGE_BYTES = 8 * MAX_IMAGE_PIXELS + (1 << 20)
#: Trials of one sweep (a bigger grid: pick some with ``--sweep-samples``).
MAX_SWEEP_TRIALS = 64
#: Bytes of one metadata file (``dataset.json``, ``model.json``, ``_summary.json``,
#: ``_run.json``): they hold a few fields and one name per class.
MAX_METADATA_BYTES = 1 << 20
#: Bytes of a registry's ``promotion.json`` (the pointer and every promotion's entry, a few
#: KB each: tens of thousands of promotions, decades of nightly ones).
MAX_RECORD_BYTES = 64 << 20
#: Bytes of a ``--params-file`` (a mapping of a few dozen parameters).
MAX_PARAMS_FILE_BYTES = 64 << 10
