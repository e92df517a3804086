"""Settings of the train and finetune steps, their checks, and what a fit returns.

No TensorFlow here: pipelines and wrappers import this cheaply.
"""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.limits import check_count, check_finite, check_seed

#: Compute precisions; ``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX-BF16,
#: float32 otherwise (tbpipe.components.training.model.resolve_precision).
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """The settings ``fit_and_save`` reads, shared by TrainConfig and FinetuneConfig.

    Attributes:
        epochs: Passes over the training data.
        batch_size: Examples per batch and per device (global batch = this x replicas).
        learning_rate: Adam's learning rate.
        seed: Seeds weights and the per-epoch shuffle: same seed and data, same metrics.
        batch_log_every: Log per-batch scalars every this many batches (0: off).
        histogram_every: Log weight histograms every this many epochs (0: off).
        flush_secs: How often TensorBoard events reach the log dir.
        checkpoint_dir: Save a checkpoint here after each epoch and resume from it (None: off).
        cache_max_mb: Cache the raw training records in memory when they are at most this big.
        precision: What the hidden layers compute in (weights and the softmax stay float32):
            ``float32``; ``mixed_float16`` (GPUs; the loss is scaled); ``mixed_bfloat16``
            (recent GPUs, TPUs, CPUs with AMX); ``auto``: ``mixed_float16`` when TensorFlow
            sees a GPU, ``mixed_bfloat16`` on a CPU with AMX-BF16, else ``float32``.
        workers: Worker processes (nodes) training together with MultiWorkerMirroredStrategy,
            each on the task's devices (:mod:`tbpipe.components.training.worker`); 1: the
            step trains in its own process. ``batch_size`` stays per device, so the global
            batch is ``batch_size`` x devices per worker x ``workers``. ``learning_rate``
            applies to that global batch as given, never scaled by tbpipe: to train as one
            worker does, keep the global batch (divide ``batch_size`` by ``workers``); to
            keep ``batch_size`` and grow the global batch, scale ``learning_rate`` yourself
            (the linear rule, x ``workers``, with a warm-up, is the usual start). The
            HParams record both ``batch_size`` and ``global_batch_size``.

    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 42
    batch_log_every: int = 1
    histogram_every: int = 1
    flush_secs: int = 5
    checkpoint_dir: str | None = None
    cache_max_mb: int = 2048
    precision: str = "auto"
    workers: int = 1

    def __post_init__(self) -> None:
        """InputError (one line) for settings training cannot use: checked once, here.

        Counts are at most 2**31-1 (TensorFlow's int32), the seed in [0, 2**32-1], the
        learning rate finite and positive.
        """
        for name in ("epochs", "batch_size", "flush_secs", "workers"):
            check_count(name, getattr(self, name))
        for name in ("batch_log_every", "histogram_every", "cache_max_mb"):
            check_count(name, getattr(self, name), low=0)
        if not check_finite("learning_rate", self.learning_rate) > 0:
            raise SettingError("learning_rate", self.learning_rate, "must be greater than 0")
        check_seed("seed", self.seed)
        if self.precision not in PRECISIONS:
            raise SettingError("precision", self.precision,
                               f"must be one of {', '.join(PRECISIONS)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig(FitConfig):
    """Settings of the train step: FitConfig's, plus the starting model and its compiling.

    Attributes:
        jit_compile: XLA-compile the train step. None (auto): Keras' choice, on with one GPU,
            off on CPU (3-4x slower there, docs/performance.md) and with several GPUs.
        model_spec: The starting model (``--model``): ``builtin:cnn``,
            ``path/to/file.py:function``, ``package.module:function``, a ``.keras`` file or
            a tbpipe Model folder (:mod:`tbpipe.components.training.user_model`).
        model_source: The text of a ``file.py:function`` spec's file, when it travelled as a
            string (the CLI reads it); empty otherwise.
        trial: The sweep trial this fit is (``trial-NN``, :mod:`tbpipe.pipelines.sweep`);
            recorded in the HParams and ``model.json``. Empty outside a sweep.

    """

    jit_compile: bool | None = None
    model_spec: str = "builtin:cnn"
    model_source: str = ""
    trial: str = ""

    def __post_init__(self) -> None:
        """FitConfig's checks, the model spec's form (InputError naming ``--model``), the trial."""
        super().__post_init__()
        from tbpipe.components.common.naming import validate_trial
        from tbpipe.components.training.user_model import parse_model_spec

        validate_trial(self.trial)

        parse_model_spec(self.model_spec, self.model_source)

    @property
    def model(self):  # noqa: ANN201 - a ModelSpec
        """The parsed model spec (:mod:`tbpipe.components.training.user_model`)."""
        from tbpipe.components.training.user_model import parse_model_spec

        return parse_model_spec(self.model_spec, self.model_source)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a train or finetune step produced.

    Attributes:
        metrics: Final epoch's ``loss``, ``accuracy``, ``val_loss`` and ``val_accuracy``.
        epochs_run: Epochs the model has been trained by this step (resumed ones included).
        resumed_from_epoch: Epochs restored from a checkpoint (0 for a fresh start).
        replicas: Devices trained on, over all workers (1 without a distribution strategy).

    """

    metrics: dict[str, float]
    epochs_run: int
    resumed_from_epoch: int
    replicas: int
