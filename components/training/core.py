"""Train a model on a Dataset, logging to TensorBoard, with per-epoch checkpoints to resume from.

``train_model`` builds a fresh model and hands it to ``fit_and_save``
(:mod:`tbpipe.components.training.fit`), the fit loop it shares with ``finetune_model``
(:mod:`tbpipe.components.finetuning.core`). The settings are
:class:`~tbpipe.components.training.config.TrainConfig`. TensorFlow is imported inside the
functions that use it, so this module imports cheaply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tbpipe.components.training.config import TrainConfig, TrainResult
from tbpipe.components.training.fit import FitJob, fit_and_save

if TYPE_CHECKING:
    import keras

    from tbpipe.components.common.dataset import DatasetInfo


def train_model(train_uri: str, val_uri: str, model_uri: str, log_dir: str,
                config: TrainConfig) -> TrainResult:
    """Train the CNN from scratch and write the Model folder at ``model_uri``.

    Args:
        train_uri: Training Dataset folder.
        val_uri: Validation Dataset folder (same image shape and classes).
        model_uri: Where the Model folder (``model.keras`` + ``model.json``) goes.
        log_dir: This step's TensorBoard folder, ``{log_root}/{experiment}/{run}/train``.
        config: The settings (validated when they were built).

    """

    def build(info: DatasetInfo, precision: str) -> keras.Model:
        from tbpipe.components.training.model import build_cnn

        jit = "auto" if config.jit_compile is None else config.jit_compile
        return build_cnn(info.image_shape, info.num_classes, config.seed, config.learning_rate,
                         precision=precision, jit_compile=jit)

    job = FitJob(train_uri, val_uri, model_uri, log_dir, build, meta={"source": "trained"})
    return fit_and_save(job, config)
