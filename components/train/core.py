"""Train the CNN on a Dataset, logging to TensorBoard, with per-epoch checkpoints to resume from.

``train_model`` builds a fresh model and hands it to ``fit_and_save`` (components.train.fit),
the fit loop it shares with ``finetune_model`` (components.finetune.core). The settings live
in components.train.config; both modules' public names are importable from here too.
TensorFlow is imported inside the functions that use it, so the configs import cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.train.config import (
    PRECISIONS,
    FitConfig,
    TrainConfig,
    TrainResult,
    checkpoint_dir_for,
    validate_precision,
    validate_settings,
)
from components.train.fit import METRIC_KEYS, SYNC_TIMEOUT_S, FitJob, fit_and_save

if TYPE_CHECKING:
    import keras

    from components.common.dataset import DatasetInfo

__all__ = ["METRIC_KEYS", "PRECISIONS", "SYNC_TIMEOUT_S", "FitConfig", "FitJob", "TrainConfig",
           "TrainResult", "checkpoint_dir_for", "fit_and_save", "train_model",
           "validate_precision", "validate_settings"]


def train_model(train_uri: str, val_uri: str, model_uri: str, log_dir: str,
                config: TrainConfig) -> TrainResult:
    """Train the CNN from scratch and write the Model folder at ``model_uri``.

    Args:
        train_uri: Training Dataset folder.
        val_uri: Validation Dataset folder (same image shape and classes).
        model_uri: Where the Model folder (``model.keras`` + ``model.json``) goes.
        log_dir: This step's TensorBoard folder, ``{log_root}/{experiment}/{run}/train``.
        config: The settings.

    """
    validate_settings(config)

    def build(info: DatasetInfo) -> keras.Model:
        from components.train.model import build_cnn

        jit = "auto" if config.jit_compile is None else config.jit_compile
        return build_cnn(info.image_shape, info.num_classes, config.seed, config.learning_rate,
                         precision=config.precision, jit_compile=jit)

    job = FitJob(train_uri, val_uri, model_uri, log_dir, build, meta={"source": "trained"})
    return fit_and_save(job, config)
