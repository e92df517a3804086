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
