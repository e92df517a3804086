"""Settings of the train and finetune steps, their checks, and what a fit returns.

No TensorFlow here: pipelines and wrappers import this cheaply.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.common.limits import INT32_MAX, check_count, check_finite, check_seed
from tbpipe.components.common.naming import validate_trial
from tbpipe.components.common.params import DEFAULT_SEED, Param, ParamGroup

#: Compute precisions; ``auto``: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX-BF16,
#: float32 otherwise (tbpipe.components.training.model.resolve_precision).
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
#: Early stopping of a tuning trial (tbpipe.components.tuning.pruning): Optuna's MedianPruner,
#: its HyperbandPruner, or none (the curve is recorded, the trial never stopped).
PRUNERS = ("none", "median", "hyperband")
BUILTIN = "builtin:cnn"
FORMS = ("builtin:cnn, path/to/file.py:function, package.module:function, a .keras file or "
         "a tbpipe Model folder")
_NAME = r"[A-Za-z_]\w*"
_MODULE = re.compile(rf"{_NAME}(\.{_NAME})*")
_FUNCTION = re.compile(_NAME)


class ModelSpec(str):
    """A parsed ``--model``: the text as given, and what it names, parsed once.

    It is the text itself (a ``str``: it passes to KFP, JSON and comparisons as the text),
    parsed where it enters tbpipe (the CLI, a params file, a step's config). One of:
    ``builtin:cnn``; ``path/to/file.py:function`` or ``package.module:function`` (a
    ``function(input_shape, num_classes)`` returning a ``keras.Model``); a ``.keras`` file
    or a tbpipe Model folder (local or a URL). Parsing imports nothing heavy.

    Attributes:
        kind: ``builtin``, ``file`` (a Python file), ``module`` (an importable module),
            ``keras`` (a ``.keras`` file) or ``folder`` (a tbpipe Model folder).
        target: The file, module, ``.keras`` file or folder (``cnn`` for builtin).
        function: The function's name (file and module kinds).
        source: A file's text, when it travelled as a string (``model_source``).

    """

    kind: str
    target: str
    function: str
    source: str

    def __new__(cls, text: str, source: str = "") -> ModelSpec:
        """Parse ``text``; InputError (one line naming ``--model``) when it is no spec."""
        if isinstance(text, ModelSpec):  # parsed already: only the source may change
            if text.source == source:
                return text
            spec, (kind, target, function) = str(text), (text.kind, text.target, text.function)
        else:
            spec = str(text).strip()
            kind, target, function = _parse_model(text, spec)
        self = super().__new__(cls, spec)
        for name, value in (("kind", kind), ("target", target), ("function", function),
                            ("source", source if kind == "file" else "")):
            object.__setattr__(self, name, value)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ModelSpec is frozen: cannot set {name}")

    def __reduce__(self) -> tuple:
        return ModelSpec, (str(self), self.source)

    @property
    def text(self) -> str:
        """The spec as plain text."""
        return str(self)

    @property
    def identity(self) -> dict[str, str]:
        """What a checkpoint is tied to besides the data (empty for the built-in CNN)."""
        if self.kind == "builtin":
            return {}
        digest = hashlib.sha256(self.source.encode()).hexdigest()[:16] if self.source else ""
        return {"model": self.text, "model_source": digest}

    def read_source(self) -> str:
        """The text of the Python file a ``file.py:function`` spec names, else ``""``.

        Read where the user runs tbpipe, so the file reaches the cluster's pods.
        """
        if self.kind != "file":
            return ""
        try:
            with open(self.target, encoding="utf-8") as handle:
                return handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            cause = getattr(exc, "strerror", None) or type(exc).__name__
            raise InputError(f"--model {self.text}: cannot read {self.target} ({cause}); pass "
                             "an existing Python file") from exc

    def made_absolute(self) -> ModelSpec:
        """The spec with a local ``.keras`` file or Model folder made absolute.

        So a local run's steps, in other folders or containers, find it.
        """
        path = self.local_start_path
        return ModelSpec(path) if path and path != self.target else self

    @property
    def local_start_path(self) -> str:
        """The absolute path of a local ``.keras`` file or Model folder spec, else ``""``."""
        if self.kind not in ("keras", "folder") or "://" in self.target:
            return ""
        return os.path.abspath(os.path.expanduser(self.target))


def _parse_model(text: str, spec: str) -> tuple[str, str, str]:
    """``(kind, target, function)`` of a model spec; InputError when it is none of FORMS."""
    bad = f"--model {text!r}: not a model spec; use {FORMS}"
    if spec.startswith("builtin:"):
        if spec != BUILTIN:
            raise InputError(f"--model {text!r}: the only built-in model is {BUILTIN}")
        return "builtin", "cnn", ""
    if spec.endswith(".keras"):
        return "keras", spec, ""
    target, sep, function = spec.rpartition(":")
    if sep and "://" not in function and "/" not in function:
        if not _FUNCTION.fullmatch(function):
            raise InputError(bad)
        if target.endswith(".py"):
            return "file", target, function
        if _MODULE.fullmatch(target):
            return "module", target, function
        raise InputError(bad)
    if spec.endswith(".py"):
        raise InputError(f"--model {text!r}: name the function too, {spec}:function")
    if not spec or any(ch.isspace() for ch in spec[:1] + spec[-1:]):
        raise InputError(bad)
    if "/" not in spec and "." in spec:  # "model.h5", "pkg.mod": looks like neither form
        raise InputError(bad)
    return "folder", spec, ""


#: The most batches one ``--profile-batch`` range may span: the profiler holds the whole trace
#: in memory until it stops (TensorFlow's guide profiles a few batches, e.g. 10).
MAX_PROFILE_BATCHES = 100
_PROFILE_RULE = (f"pass A,B: the first and last global batch to profile, 1 <= A <= B, at most "
                 f"{MAX_PROFILE_BATCHES} batches (e.g. 10,20); empty: no profile")


class ProfileBatches(str):
    """A parsed ``--profile-batch``: ``A,B`` (global batches A to B, 1-based) or ``""`` (off).

    The text as given (a ``str``, as it travels through KFP and JSON), parsed once where it
    enters tbpipe; a single ``N`` is ``N,N``.

    Attributes:
        first: The first global batch profiled (0: off).
        last: The last global batch profiled (0: off).

    """

    first: int
    last: int

    def __new__(cls, text: str) -> ProfileBatches:
        """Parse ``text``; SettingError (one line naming ``--profile-batch``) when bad."""
        if isinstance(text, ProfileBatches):
            return text
        spec = "".join(str(text).split())
        first = last = 0
        if spec:
            parts = spec.split(",")
            if len(parts) not in (1, 2) or not all(p.isascii() and p.isdigit() and len(p) <= 10
                                                   for p in parts):
                raise SettingError("--profile-batch", text, _PROFILE_RULE)
            first, last = int(parts[0]), int(parts[-1])
            if not 1 <= first <= last or last - first >= MAX_PROFILE_BATCHES \
                    or last > INT32_MAX:
                raise SettingError("--profile-batch", text, _PROFILE_RULE)
        self = super().__new__(cls, f"{first},{last}" if spec else "")
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "last", last)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ProfileBatches is frozen: cannot set {name}")

    def __reduce__(self) -> tuple:
        return ProfileBatches, (str(self),)


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
        profile_batch: Profile these global batches with the TensorFlow profiler into the
            step's log folder (``plugins/profile/``, TensorBoard's Profile tab):
            ``A,B`` (:class:`ProfileBatches`); empty: no profile.

    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = DEFAULT_SEED
    batch_log_every: int = 1
    histogram_every: int = 1
    flush_secs: int = 5
    checkpoint_dir: str | None = None
    cache_max_mb: int = 2048
    precision: str = "auto"
    workers: int = 1
    profile_batch: str = ""

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
        object.__setattr__(self, "profile_batch", ProfileBatches(self.profile_batch))


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
        model_kwargs: Keyword arguments for a ``file.py:function`` or
            ``package.module:function`` model, as a JSON object (``{"filters": 32}``): a
            tuning trial's ``model.NAME`` parameters. Empty: none.
        tune_study: The study folder of the tuning trial this fit is
            (:mod:`tbpipe.components.tuning.study`). Empty: not a tuning trial (nothing
            changes).
        tune_trial: The trial's number in that study.
        pruner: Stops the trial early from its curve: one of PRUNERS
            (:mod:`tbpipe.components.tuning.pruning`).

    """

    jit_compile: bool | None = None
    model_spec: str = BUILTIN
    model_source: str = ""
    trial: str = ""
    model_kwargs: str = ""
    tune_study: str = ""
    tune_trial: int = 0
    pruner: str = "none"

    def __post_init__(self) -> None:
        """FitConfig's checks, the model spec parsed (InputError naming ``--model``), the trial.

        ``model_kwargs`` is parsed once here (SettingError unless a JSON object, or when the
        model takes no keyword arguments); the pruner is one of PRUNERS.
        """
        super().__post_init__()
        validate_trial(self.trial)
        object.__setattr__(self, "model_spec", ModelSpec(self.model_spec, self.model_source))
        object.__setattr__(self, "_model_keywords", _parse_model_kwargs(
            self.model_kwargs, self.model_spec))
        check_count("tune_trial", self.tune_trial, low=0)
        if self.tune_study and self.workers > 1:
            raise SettingError("workers", self.workers, "a tuning trial trains on one worker; "
                               "give --workers 1 with --tune")
        if self.pruner not in PRUNERS:
            raise SettingError("pruner", self.pruner, f"must be one of {', '.join(PRUNERS)}")

    @property
    def model_keywords(self) -> dict[str, object]:
        """``model_kwargs`` parsed: keyword arguments for the model function (a copy)."""
        return dict(self._model_keywords)

    @property
    def model(self) -> ModelSpec:
        """The parsed model spec, with ``model_source``."""
        return self.model_spec


def _parse_model_kwargs(text: str, spec: ModelSpec) -> dict[str, object]:
    """``model_kwargs``' JSON object; SettingError (one line) for anything else."""
    import json

    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except ValueError:
        kwargs = None
    if not isinstance(kwargs, dict) or not all(_FUNCTION.fullmatch(k) for k in kwargs):
        raise SettingError("model_kwargs", text, "must be a JSON object of keyword argument "
                           'names to values, e.g. {"filters": 32}')
    if kwargs and spec.kind not in ("file", "module"):
        raise SettingError("model_kwargs", text, f"--model {spec.text} takes no keyword "
                           "arguments; tune model.NAME with a file.py:function or "
                           "package.module:function model")
    return kwargs


def check_train_params(values: dict) -> None:
    """The checkpoint root: a log root that is a bucket root needs ``--checkpoint-root``."""
    from tbpipe.components.common.naming import checkpoint_root_for

    if values["log_root"]:  # checkpoints default beside it: a bucket root has no sibling
        checkpoint_root_for(values["log_root"], values["checkpoint_root"])


PARAMS = ParamGroup("train", (
    Param("epochs", "passes over the training data"),
    Param("batch_size", "examples per batch and per device (train and finetune)"),
    Param("learning_rate", "Adam's learning rate"),
    Param("seed", "seeds the split, the weights and the shuffle: same seed and data, same "
                  "metrics"),
    Param("precision", "what the hidden layers compute in (train and finetune); auto: "
                       "mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX-BF16, else "
                       "float32", choices=PRECISIONS),
    Param("model", "the model to train: builtin:cnn (default), path/to/file.py:function, "
                   "package.module:function, a .keras file or a Model folder "
                   "(docs/models.md)", field="model_spec", parse=ModelSpec),
    Param("model_source", "the text of --model's file.py (tbpipe reads it where it runs)",
          flag=False),
    Param("profile_batch", "profile global batches A,B of train and finetune with the "
                           "TensorFlow profiler (TensorBoard's Profile tab), e.g. 10,20; "
                           "empty: no profile", parse=ProfileBatches),
    Param("workers", "train and fine-tune over N worker processes "
                     "(MultiWorkerMirroredStrategy; --batch-size stays per device, so the "
                     "global batch grows with N; the learning rate is not scaled)"),
    Param("checkpoint_root", "where train and finetune checkpoint each epoch; default: the "
                             "log root's sibling {log_root}-checkpoints",
          type=str, default=""),
), config=TrainConfig, check=check_train_params)


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
