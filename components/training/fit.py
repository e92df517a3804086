"""The one fit loop of the train and finetune steps: resume, fit, log, checkpoint, save.

``train_model`` (:mod:`.core`) and ``finetune_model`` (:mod:`tbpipe.components.finetuning.core`)
differ only in the model they start from and what they record (a :class:`FitJob`).
TensorFlow is imported inside the functions that use it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tbpipe.components.training.config import FitConfig, TrainResult

if TYPE_CHECKING:
    import keras

    from tbpipe.components.common.dataset import DatasetInfo

METRIC_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
SYNC_TIMEOUT_S = 10.0  # the most a checkpoint waits for its epoch's events to be written


@dataclasses.dataclass(frozen=True)
class FitJob:
    """What differs between train and finetune: inputs, outputs, the starting model, records.

    Attributes:
        build: Makes the compiled starting model for the training data's manifest, computing
            in the given Keras dtype policy (``config.precision`` resolved); called inside the
            distribution strategy's scope, only when there is no checkpoint.
        hparams: Extra hyper-parameters for TensorBoard's HParams (besides the settings).
        meta: Extra ``model.json`` fields (``source`` and what the model came from).
        base_epochs: Epochs the starting model was already trained (finetune).
        callbacks: More Keras callbacks, run after tbpipe's own (e.g. a timer, early stopping).
        identity: What else a checkpoint must have been made from to be resumed (content,
            never an artifact path, which changes with every run of a pipeline).
        summary: Log ``model.summary()`` as TensorBoard text (``model/summary``).
        writer_callbacks: Makes more Keras callbacks from the step's open writer (run last),
            e.g. a tuning trial's reporter, which reads the events back after each epoch.
        later_metrics: HParams metrics a later step writes into this folder (NaN until
            then, at the HParams' step), e.g. a tuning trial's ``hparam/pareto``.

    """

    train_uri: str
    val_uri: str
    model_uri: str
    log_dir: str
    build: Callable[[DatasetInfo, str], keras.Model]
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    base_epochs: int = 0
    callbacks: Sequence[keras.callbacks.Callback] = ()
    identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    summary: bool = False
    writer_callbacks: Callable[[Any], Sequence[keras.callbacks.Callback]] | None = None
    later_metrics: Sequence[str] = ()


def fit_and_save(job: FitJob, config: FitConfig) -> TrainResult:
    """Fit (resuming from ``config.checkpoint_dir`` if it holds a checkpoint), log, save.

    Every TensorBoard tag uses the global batch number as its step (epoch tags at the
    epoch's last batch), so a resumed attempt purges what the interrupted one logged after
    its checkpoint with one ``purge_step`` and no step appears twice or goes missing.
    HParams (the settings and the precision the model computes in) are logged last, at the
    last step, after the model is saved. An event that could not be written (disk full) fails
    the step with one StorageError line naming the log dir: at the next checkpoint, before
    the model is saved, or when the writer closes.
    """
    from tbpipe.components.common.tensorboard.writer import log_hparams, open_writer, sync_events
    from tbpipe.components.training.divergence import check_finite_fit

    plan = _plan_fit(job, config)
    purge = plan.initial_step + 1 if plan.initial_epoch else None
    with open_writer(job.log_dir, flush_secs=config.flush_secs, purge_step=purge) as writer:
        _log_devices(writer, plan, plan.initial_step + 1)
        if job.summary:
            writer.add_text("model/summary", model_summary(plan.model), plan.initial_step + 1)
        logs, done = _run_fit(plan, job, config, writer)
        metrics = {key: float(logs[key]) for key in METRIC_KEYS}
        check_finite_fit(plan.model, metrics)  # a diverged model is never saved
        sync_events(writer, SYNC_TIMEOUT_S)  # lost events fail the step before the model is out
        _save(plan, job, config, metrics, done)
        hparams = {"epochs": config.epochs, "batch_size": config.batch_size,
                   "learning_rate": config.learning_rate, "seed": config.seed,
                   "precision": plan.precision, "params": int(plan.model.count_params()),
                   **_worker_hparams(plan, config), **job.hparams}
        last_step = plan.initial_step + plan.steps_per_epoch * max(0, done - plan.initial_epoch)
        log_hparams(writer, hparams, {**{f"hparam/{k}": v for k, v in metrics.items()},
                                      **dict.fromkeys(job.later_metrics, math.nan)},
                    step=last_step)
    print(f"model written to {job.model_uri}: "
          + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), flush=True)
    return TrainResult(metrics=metrics, epochs_run=done,
                       resumed_from_epoch=plan.initial_epoch, replicas=plan.replicas)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The resolved fit: data, strategy, starting model and where it resumes."""

    train_info: DatasetInfo
    strategy: Any
    replicas: int
    model: keras.Model
    precision: str  # what the model's hidden layers compute in
    steps_per_epoch: int
    fingerprint: dict
    initial_epoch: int = 0
    initial_step: int = 0
    last_slot: str | None = None
    last_logs: dict = dataclasses.field(default_factory=dict)


def _plan_fit(job: FitJob, config: FitConfig) -> _Plan:
    from tbpipe.components.training import model  # first: it imports Keras the fast way

    keras = model.keras
    from tbpipe.components.training import checkpoint, data

    train_info = data.read_dataset_info(job.train_uri)
    val_info = data.read_dataset_info(job.val_uri)
    data.check_compatible(train_info, val_info, job.train_uri, job.val_uri)
    keras.utils.set_random_seed(config.seed)
    strategy = _fit_strategy(config)
    replicas = int(strategy.num_replicas_in_sync)
    precision = model.resolve_precision(config.precision)  # the one place it is resolved
    # What the run is made of, by content: a rerun of the pipeline (new artifact paths) or a
    # copy of the data elsewhere resumes; other data or settings are refused.
    fingerprint = {"train_data": train_info.digest or job.train_uri,
                   "val_data": val_info.digest or job.val_uri, "seed": config.seed,
                   "batch_size": config.batch_size, "learning_rate": config.learning_rate,
                   "num_examples": train_info.num_examples,
                   "precision": precision, **_worker_identity(config), **job.identity}
    state = None
    if config.checkpoint_dir:
        state = checkpoint.resume_state(config.checkpoint_dir, fingerprint, config.epochs)
    with strategy.scope():
        if state:
            print(f"resuming from epoch {state.epoch} in {config.checkpoint_dir}", flush=True)
            start = checkpoint.load_checkpoint(config.checkpoint_dir, state)
        else:
            start = job.build(train_info, precision)
    spe = data.steps_per_epoch(train_info.num_examples, config.batch_size * replicas)
    resumed = {} if state is None else {
        "initial_epoch": state.epoch, "initial_step": state.global_step,
        "last_slot": state.slot, "last_logs": state.logs}
    return _Plan(train_info, strategy, replicas, start, model.model_precision(start), spe,
                 fingerprint, **resumed)


# --- multi-worker training (tbpipe.components.training.distributed) -----------------------


def _fit_strategy(config: FitConfig):  # noqa: ANN202 - a tf.distribute.Strategy
    """The worker process's MultiWorkerMirroredStrategy with ``workers`` > 1, else one machine's."""
    from tbpipe.components.training import model
    from tbpipe.components.training.distributed import multi_worker_strategy

    return multi_worker_strategy(config.workers) if config.workers > 1 else model.pick_strategy()


def _worker_identity(config: FitConfig) -> dict:
    """What a checkpoint of a multi-worker fit is also made of (a global batch's workers)."""
    return {"workers": config.workers} if config.workers > 1 else {}


def _worker_hparams(plan: _Plan, config: FitConfig) -> dict:
    """Both batch sizes (per device, global) and the workers, for TensorBoard's HParams."""
    return {"global_batch_size": config.batch_size * plan.replicas, "workers": config.workers}


def _worker_callbacks(plan: _Plan, config: FitConfig, writer) -> list:  # noqa: ANN001
    """With ``workers`` > 1: the per-worker throughput scalars (one all-reduce an epoch)."""
    if config.workers == 1:
        return []
    import os

    from tbpipe.components.training.distributed import worker_cluster, worker_throughput_callback

    return [worker_throughput_callback(
        plan.strategy, writer, worker_cluster(os.environ), plan.train_info.num_examples,
        plan.steps_per_epoch, plan.initial_step)]


def model_summary(model: keras.Model) -> str:
    """``model.summary()`` as a Markdown code block (TensorBoard's text tab renders it)."""
    lines: list[str] = []
    model.summary(print_fn=lambda text, *_, **__: lines.append(str(text)))
    return "```\n" + "\n".join(lines).rstrip() + "\n```"


def _log_devices(writer, plan: _Plan, step: int) -> None:
    from tbpipe.components.training.model import visible_gpus

    gpus = visible_gpus()
    writer.add_scalar("train/devices", plan.replicas, step)
    writer.add_scalar("train/gpus", len(gpus), step)
    where = f"{plan.replicas} replica(s) on {', '.join(gpus) or 'CPU'}"
    writer.add_text("train/device_list", where, step)
    print(f"training on {where} in {plan.precision}, {plan.steps_per_epoch} batches per "
          f"epoch, {plan.train_info.num_examples} examples", flush=True)


def _run_fit(plan: _Plan, job: FitJob, config: FitConfig, writer) -> tuple[dict, int]:
    """Run ``model.fit`` over the remaining epochs; the last epoch's logs and the epochs done.

    Fewer than ``config.epochs`` when a callback stopped the fit (a pruned tuning trial).

    tbpipe's callbacks are all ``async_safe``: on a backend Keras deems thread-safe (JAX,
    PyTorch; not TensorFlow, whose batch hooks Keras 3.15 always runs on the training loop)
    the per-batch hooks would run on Keras' callback threads.
    """
    from tbpipe.components.common.progress import keras_progress_callback
    from tbpipe.components.common.tensorboard.writer import sync_events
    from tbpipe.components.training import checkpoint, data
    from tbpipe.components.training.divergence import StopOnNonFinite
    from tbpipe.components.training.preemption import StopOnSignal, sigterm_flag
    from tbpipe.components.training.tensorboard_callback import BatchProfiler, TensorBoardX

    if plan.initial_epoch >= config.epochs:
        return plan.last_logs, config.epochs
    train_ds, val_ds = data.fit_datasets(
        job.train_uri, job.val_uri, config.batch_size * plan.replicas, config.seed,
        range(plan.initial_epoch, config.epochs), config.cache_max_mb)
    tb = TensorBoardX(writer, config.batch_log_every, config.histogram_every,
                      plan.initial_epoch, plan.steps_per_epoch,
                      global_steps=True, initial_step=plan.initial_step)
    with sigterm_flag() as flag:
        step = job.log_dir.rstrip("/").rsplit("/", 1)[-1]  # {log_root}/{exp}/{run}/{step}
        callbacks = [StopOnSignal(flag, config.checkpoint_dir), tb,
                     keras_progress_callback(step, config.epochs, plan.steps_per_epoch),
                     StopOnNonFinite()]  # before the checkpoint: a NaN epoch is never kept
        callbacks.extend(_worker_callbacks(plan, config, writer))  # logged before a checkpoint
        if config.profile_batch:  # into the writer's folder: a store's is uploaded on close
            callbacks.append(BatchProfiler(writer.logdir, config.profile_batch.first,
                                           config.profile_batch.last, plan.initial_step))
        if config.checkpoint_dir:
            callbacks.append(checkpoint.EpochCheckpoint(
                config.checkpoint_dir, plan.fingerprint, plan.steps_per_epoch,
                plan.initial_step, plan.last_slot,
                before_save=lambda: sync_events(writer, SYNC_TIMEOUT_S)))
        callbacks.extend(job.callbacks)
        if job.writer_callbacks is not None:
            callbacks.extend(job.writer_callbacks(writer))
        history = plan.model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                                 initial_epoch=plan.initial_epoch,
                                 steps_per_epoch=plan.steps_per_epoch,
                                 callbacks=callbacks, shuffle=False, verbose=2)
    logs = {key: values[-1] for key, values in history.history.items()}
    return logs, plan.initial_epoch + len(history.epoch)


def _save(plan: _Plan, job: FitJob, config: FitConfig, metrics: dict[str, float],
          epochs: int | None = None) -> None:
    """Write the Model folder; ``epochs``: the epochs this fit ran (default: all of them)."""
    from tbpipe.components.common.model_format import save_model_folder

    info = plan.train_info
    meta = {"image_shape": list(info.image_shape), "num_classes": info.num_classes,
            "epochs": job.base_epochs + (config.epochs if epochs is None else epochs),
            "learning_rate": config.learning_rate,
            "batch_size": config.batch_size, "seed": config.seed, "train_data": job.train_uri,
            "params": int(plan.model.count_params()), "precision": plan.precision,
            "metrics": metrics, **job.meta}
    names = getattr(info, "class_names", None)
    if names:
        meta["class_names"] = [str(n) for n in names]
    save_model_folder(plan.model, job.model_uri, meta)
