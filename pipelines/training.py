"""tbpipe's training pipeline: preprocess -> train -> evaluate -> [finetune -> evaluate] -> select.

Wiring only: every step's logic lives in ``tbpipe.components``, where each placement comes
from :mod:`tbpipe.pipelines.placement`. :class:`PipelineParams` is the one table of the
pipeline's run-time parameters: the CLI flags, the pipeline's signature and the run options
derive from it, and its defaults are the step configs' own. Compiling imports no TensorFlow.
"""

import contextlib
import dataclasses
import os
import re
import tempfile
from pathlib import Path
from types import MappingProxyType

from kfp import compiler, dsl

from tbpipe import components
from tbpipe.components.common.errors import InputError, SettingError, os_errors
from tbpipe.components.common.naming import checkpoint_root_for, validate_name
from tbpipe.components.evaluation.config import EvaluateConfig
from tbpipe.components.finetuning.config import FinetuneConfig
from tbpipe.components.preprocessing.config import PreprocessConfig
from tbpipe.components.selection.core import FINETUNE_MODES
from tbpipe.components.training.config import PRECISIONS, TrainConfig
from tbpipe.pipelines.placement import CompileOptions, configure_task

PIPELINE_NAME = "tbpipe-training"
#: Allowed values of the parameters that have a fixed set (``--help`` lists them).
PARAM_CHOICES = MappingProxyType({"finetune": FINETUNE_MODES, "precision": PRECISIONS})


@dataclasses.dataclass(frozen=True)
class PipelineParams:
    """Run-time parameters of the training pipeline (the compiled spec's inputs).

    ``log_root`` is empty by default: a local run resolves it when it starts
    (``./tbpipe-runs/logs``), so a compiled YAML holds no path of the machine that compiled
    it; a cluster run must be given one (``gs://BUCKET/logs``). ``resume``: continue the run
    of this name (interrupted or finished) instead of refusing it; every step claims the run
    for its job (``tbpipe.components.common.run_claim``). ``model``: the train step's
    starting model (docs/models.md); ``model_source``: the text of its ``file.py`` when it is
    ``file.py:function`` (no flag: :meth:`with_model_source` reads it where tbpipe runs).
    """

    data: str = "builtin:digits"
    finetune_data: str = ""
    log_root: str = ""
    experiment: str = "default"
    run_name: str = ""
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    learning_rate: float = TrainConfig.learning_rate
    seed: int = TrainConfig.seed
    val_fraction: float = PreprocessConfig.val_fraction
    test_fraction: float = PreprocessConfig.test_fraction
    accuracy_target: float = EvaluateConfig.accuracy_target
    finetune: str = FINETUNE_MODES[0]
    finetune_epochs: int = FinetuneConfig.epochs
    finetune_learning_rate: float = FinetuneConfig.learning_rate
    freeze_layers: int = FinetuneConfig.freeze_layers
    tensorboard_url: str = EvaluateConfig.tensorboard_url
    checkpoint_root: str = ""
    precision: str = TrainConfig.precision
    resume: bool = False
    image_size: str = PreprocessConfig.image_size
    channels: int = PreprocessConfig.channels
    model: str = TrainConfig.model_spec
    model_source: str = ""

    def validate(self) -> "PipelineParams":
        """Check every parameter before anything runs, by building each step's config.

        Each setting is checked once, where its step's config is built; the error names the
        flag (``--finetune-epochs=0: must be a positive integer``).
        """
        steps = (  # (config, {config field: pipeline parameter})
            (PreprocessConfig, {"val_fraction": "val_fraction",
                                "test_fraction": "test_fraction", "seed": "seed",
                                "image_size": "image_size", "channels": "channels"}),
            (TrainConfig, {"epochs": "epochs", "batch_size": "batch_size",
                           "learning_rate": "learning_rate", "seed": "seed",
                           "precision": "precision", "model_spec": "model",
                           "model_source": "model_source"}),
            (FinetuneConfig, {"epochs": "finetune_epochs", "batch_size": "batch_size",
                              "learning_rate": "finetune_learning_rate",
                              "freeze_layers": "freeze_layers", "seed": "seed",
                              "precision": "precision"}),
            (EvaluateConfig, {"accuracy_target": "accuracy_target",
                              "tensorboard_url": "tensorboard_url"}),
        )
        for config, fields in steps:
            try:
                config(**{field: getattr(self, param) for field, param in fields.items()})
            except SettingError as exc:  # name the flags: "--val-fraction + --test-fraction"
                flags = {field: "--" + param.replace("_", "-") for field, param in fields.items()}
                flag = re.sub(r"\w+", lambda m, flags=flags: flags.get(m[0], m[0]), exc.name)
                raise SettingError(flag, exc.value, exc.rule) from None
        if self.finetune not in FINETUNE_MODES:
            raise SettingError("--finetune", self.finetune,
                               f"must be one of {', '.join(FINETUNE_MODES)}")
        validate_name("experiment", self.experiment)
        if self.log_root:  # checkpoints default beside it: a bucket root has no sibling
            checkpoint_root_for(self.log_root, self.checkpoint_root)
        if self.run_name:
            validate_name("run", self.run_name)
        return self

    def with_model_source(self) -> "PipelineParams":
        """These parameters with ``model_source`` read from a ``file.py:function`` model.

        Where it was not given: the file's text travels to the train step, wherever it runs.
        InputError (one line) if the file cannot be read.
        """
        from tbpipe.components.training.user_model import read_model_source

        if self.model_source:
            return self
        return dataclasses.replace(self, model_source=read_model_source(self.model))

    def as_arguments(self) -> dict[str, object]:
        """The parameters as pipeline arguments."""
        return dataclasses.asdict(self)


def build_training_pipeline(options: CompileOptions | None = None):  # noqa: ANN201
    """Tbpipe's ``@dsl.pipeline`` function, with ``options`` applied to every task.

    Use it as a pipeline of its own, or call it inside yours (its output is the selection
    summary as JSON).
    """
    options = options or CompileOptions()
    defaults = PipelineParams()

    def step(task, name: str):  # noqa: ANN001, ANN202
        return configure_task(task.set_display_name(name), name, options)

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def training_pipeline(
        data: str = defaults.data, finetune_data: str = defaults.finetune_data,
        log_root: str = options.default_log_root or defaults.log_root,
        experiment: str = defaults.experiment,
        run_name: str = defaults.run_name, epochs: int = defaults.epochs,
        batch_size: int = defaults.batch_size, learning_rate: float = defaults.learning_rate,
        seed: int = defaults.seed, val_fraction: float = defaults.val_fraction,
        test_fraction: float = defaults.test_fraction,
        accuracy_target: float = defaults.accuracy_target, finetune: str = defaults.finetune,
        finetune_epochs: int = defaults.finetune_epochs,
        finetune_learning_rate: float = defaults.finetune_learning_rate,
        freeze_layers: int = defaults.freeze_layers,
        tensorboard_url: str = defaults.tensorboard_url,
        checkpoint_root: str = defaults.checkpoint_root, precision: str = defaults.precision,
        resume: bool = defaults.resume, image_size: str = defaults.image_size,
        channels: int = defaults.channels, model: str = defaults.model,
        model_source: str = defaults.model_source,
    ) -> str:
        where = dict(log_root=log_root, experiment=experiment, run_name=run_name, resume=resume)
        prep = step(components.preprocess(data=data, val_fraction=val_fraction,
                                          test_fraction=test_fraction, seed=seed,
                                          image_size=image_size, channels=channels, **where),
                    "preprocess")
        trained = step(components.train(train_data=prep.outputs["train_data"],
                                        val_data=prep.outputs["val_data"], epochs=epochs,
                                        batch_size=batch_size, learning_rate=learning_rate,
                                        seed=seed, checkpoint_root=checkpoint_root,
                                        precision=precision, model_spec=model,
                                        model_source=model_source, **where), "train")
        scored = step(components.evaluate(model=trained.outputs["model"],
                                          test_data=prep.outputs["test_data"],
                                          accuracy_target=accuracy_target, step_name="evaluate",
                                          tensorboard_url=tensorboard_url, **where), "evaluate")
        decision = step(components.decide_finetune(
            mode=finetune, meets_target=scored.outputs["meets_target"],
            finetune_data=finetune_data), "decide-finetune")

        def finetune_and_select(train_data, val_data):  # noqa: ANN001, ANN202
            tuned = step(components.finetune(
                model=trained.outputs["model"], train_data=train_data, val_data=val_data,
                epochs=finetune_epochs, learning_rate=finetune_learning_rate,
                freeze_layers=freeze_layers, batch_size=batch_size, seed=seed,
                checkpoint_root=checkpoint_root, precision=precision, **where), "finetune")
            rescored = step(components.evaluate(
                model=tuned.outputs["finetuned_model"], test_data=prep.outputs["test_data"],
                accuracy_target=accuracy_target, step_name="evaluate-finetuned",
                tensorboard_url=tensorboard_url, **where), "evaluate-finetuned")
            return step(components.select_model(
                trained_model=trained.outputs["model"],
                trained_accuracy=scored.outputs["accuracy"],
                finetuned_model=tuned.outputs["finetuned_model"],
                finetuned_accuracy=rescored.outputs["accuracy"]), "select-model")

        with dsl.If(decision.output == "same-data", name="finetune-same-data"):
            same = finetune_and_select(prep.outputs["train_data"], prep.outputs["val_data"])
        with dsl.Elif(decision.output == "other-data", name="finetune-other-data"):
            other_prep = step(components.preprocess(
                data=finetune_data, val_fraction=val_fraction, test_fraction=0.0, seed=seed,
                image_size=image_size, channels=channels,
                step_name="preprocess-finetune-data", **where), "preprocess-finetune-data")
            other = finetune_and_select(other_prep.outputs["train_data"],
                                        other_prep.outputs["val_data"])
        with dsl.Else(name="keep-trained-model"):
            kept = step(components.select_model(trained_model=trained.outputs["model"],
                                                trained_accuracy=scored.outputs["accuracy"]),
                        "select-model")
        return dsl.OneOf(same.outputs["Output"], other.outputs["Output"], kept.outputs["Output"])

    return training_pipeline


#: The names KFP compiles to that hold tbpipe's pipeline. kfp 2.17 also takes ``.json``
#: (deprecated), but only for pipelines without platform settings, and tbpipe's has them
#: (node selectors, tolerations): it would empty the file, then fail.
YAML_SUFFIXES = (".yaml", ".yml")


def compile_pipeline(package_path: str, options: CompileOptions | None = None) -> str:
    """Compile tbpipe's pipeline to a KFP v2 YAML at ``package_path``; returns the path.

    The YAML goes to a temporary sibling, then replaces ``package_path`` in one rename, so
    a file already there is never emptied or half-written.

    Raises:
        InputError: ``package_path`` does not end in ``.yaml``/``.yml`` (checked before any
            file is touched).
        StorageError: it cannot be written (one line naming it and the cause).

    """
    if not package_path.endswith(YAML_SUFFIXES):
        raise InputError(f"{package_path}: KFP compiles tbpipe's pipeline to YAML only; "
                         "use a name ending in .yaml or .yml")
    pipeline = build_training_pipeline(options)
    final = Path(package_path)
    with os_errors(package_path):
        handle, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial.yaml",
                                       dir=final.parent)
        os.close(handle)
    try:
        with os_errors(package_path):
            compiler.Compiler().compile(pipeline, package_path=tmp)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a YAML gets the usual mode
            os.replace(tmp, package_path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return package_path
