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
    """Train ``config.model_spec`` (the CNN by default) and write the Model folder.

    The starting model is built (or loaded) and checked against the data before any
    training: a bad spec, file or function fails with one line.

    Args:
        train_uri: Training Dataset folder.
        val_uri: Validation Dataset folder (same image shape and classes).
        model_uri: Where the Model folder (``model.keras`` + ``model.json``) goes.
        log_dir: This step's TensorBoard folder, ``{log_root}/{experiment}/{run}/train``.
        config: The settings (validated when they were built).

    """
    spec = config.model
    kwargs = config.model_keywords

    def build(info: DatasetInfo, precision: str) -> keras.Model:
        from tbpipe.components.training.user_model import build_start_model

        jit = "auto" if config.jit_compile is None else config.jit_compile
        return build_start_model(spec, info.image_shape, info.num_classes, seed=config.seed,
                                 learning_rate=config.learning_rate, precision=precision,
                                 jit_compile=jit, model_kwargs=kwargs)

    trial = {"trial": config.trial} if config.trial else {}
    keywords = {f"model.{name}": value for name, value in kwargs.items()}
    identity = {**spec.identity, **({"model_kwargs": config.model_kwargs} if kwargs else {})}
    hparams = {"model": spec.text, **trial, **keywords}
    job = FitJob(train_uri, val_uri, model_uri, log_dir, build, hparams=hparams,
                 meta={"source": "trained", "model": spec.text, **trial, **keywords},
                 identity=identity, summary=True)
    if not config.tune_study:
        return fit_and_save(job, config)
    return _fit_trial(job, config, hparams)


def _fit_trial(job: FitJob, config: TrainConfig, hparams: dict) -> TrainResult:
    """Fit a tuning trial: its curve and end state go to its study (tuning.pruning).

    ``hparams`` is the job's own dict: the trial's state joins it before the HParams are
    logged (after the fit), with the metric ``hparam/pareto`` declared (NaN; select-tuned
    writes 1 or 0 once the search ends). A failure is recorded in the trial's file, then
    raised.
    """
    import dataclasses

    from tbpipe.components.common.errors import error_line
    from tbpipe.components.common.tensorboard.writer import sync_events
    from tbpipe.components.training.fit import SYNC_TIMEOUT_S
    from tbpipe.components.tuning.objectives import PARETO_METRIC
    from tbpipe.components.tuning.pruning import TrialReporter, keras_callback

    reporter = TrialReporter(config.tune_study, config.tune_trial, config.pruner,
                             config.epochs, log_dir=job.log_dir, model_uri=job.model_uri)
    hparams.update({"tune_trial": config.tune_trial, "tune_state": "running"})

    def callbacks(writer) -> list:  # noqa: ANN001 - the step's tensorboardX writer
        return [keras_callback(reporter, writer.logdir, hparams=hparams,
                               sync=lambda: sync_events(writer, SYNC_TIMEOUT_S))]

    try:
        result = fit_and_save(dataclasses.replace(job, writer_callbacks=callbacks,
                                                  later_metrics=(PARETO_METRIC,)), config)
    except Exception as exc:
        reporter.fail(error_line(exc))
        raise
    reporter.finish(result.metrics, epochs_run=result.epochs_run)
    return result
