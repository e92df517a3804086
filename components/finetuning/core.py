"""Fine-tune a trained tbpipe Model: lower learning rate, optionally frozen early layers.

The fit loop, logging and checkpointing are the train step's (``fit_and_save``); only the
starting model and what gets recorded differ. TensorFlow is imported inside functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.model_format import load_fitting_model, read_model_meta
from tbpipe.components.finetuning.config import FinetuneConfig
from tbpipe.components.training.config import TrainResult
from tbpipe.components.training.fit import FitJob, fit_and_save

#: The base model's model.json fields a finetune checkpoint is tied to.
BASE_IDENTITY = ("image_shape", "num_classes", "epochs", "seed", "learning_rate",
                 "batch_size", "params", "precision", "metrics")

if TYPE_CHECKING:
    import keras

    from tbpipe.components.common.dataset import DatasetInfo


def finetune_model(base_model_uri: str, train_uri: str, val_uri: str, model_uri: str,
                   log_dir: str, config: FinetuneConfig) -> TrainResult:
    """Train the Model folder at ``base_model_uri`` further and write a new Model folder.

    Args:
        base_model_uri: A Model folder written by the train (or finetune) step.
        train_uri: Training Dataset folder (the original one or another with the same
            image shape and classes).
        val_uri: Validation Dataset folder.
        model_uri: Where the fine-tuned Model folder goes.
        log_dir: This step's TensorBoard folder, ``{log_root}/{experiment}/{run}/finetune``.
        config: The settings.

    """
    base_meta = read_model_meta(base_model_uri)
    base_epochs = int(base_meta.get("epochs", 0))

    def build(info: DatasetInfo, precision: str) -> keras.Model:
        return load_base(base_model_uri, base_meta, info, config, precision)

    hparams = {"base_model": base_model_uri, "base_epochs": base_epochs,
               "freeze_layers": config.freeze_layers}
    meta = {"source": "finetuned", "base_model": base_model_uri, "base_epochs": base_epochs,
            "finetune_epochs": config.epochs, "freeze_layers": config.freeze_layers}
    # The base model by what it is (its record), not where this run's artifact lies.
    identity = {"base_model": {k: base_meta.get(k) for k in BASE_IDENTITY},
                "freeze_layers": config.freeze_layers}
    job = FitJob(train_uri, val_uri, model_uri, log_dir, build, hparams=hparams, meta=meta,
                 base_epochs=base_epochs, identity=identity)
    return fit_and_save(job, config)


def load_base(uri: str, meta: dict, info: DatasetInfo, config: FinetuneConfig,
              precision: str) -> keras.Model:
    """Load the base model, check it fits the data, set its precision, freeze, recompile.

    The base model computes in ``precision`` (a Keras dtype policy) from here on, whatever it
    was trained in (e.g. ``mixed_float16`` on a GPU, fine-tuned in float32 on a CPU).
    """
    from tbpipe.components.training.model import compile_model, with_precision

    model, _ = load_fitting_model(uri, info.image_shape, info.num_classes,
                                  "fine-tune on data shaped like the base model's",
                                  class_names=info.class_names)
    if config.freeze_layers >= len(model.layers):
        raise InputError(f"freeze_layers={config.freeze_layers}: the model has "
                         f"{len(model.layers)} layers; freeze fewer so some still train")
    model = with_precision(model, precision)
    for layer in model.layers[:config.freeze_layers]:
        layer.trainable = False
    compile_model(model, config.learning_rate)
    print(f"fine-tuning {uri} (trained {meta.get('epochs')} epochs), "
          f"{config.freeze_layers} layer(s) frozen, learning rate {config.learning_rate}, "
          f"{model.layers[0].dtype_policy.name}", flush=True)
    return model
