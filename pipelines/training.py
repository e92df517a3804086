"""tbpipe's training pipeline: preprocess -> train -> evaluate -> [finetune -> evaluate] -> select.

Then, with ``promote_to``, promote: the selected model goes to production only if it wins.

Wiring only: every step's logic lives in ``tbpipe.components``, where each placement comes
from :mod:`tbpipe.pipelines.placement`. :class:`PipelineParams` is the one table of the
pipeline's run-time parameters: the CLI flags, the pipeline's signature and the run options
derive from it, and its defaults are the step configs' own. Compiling imports no TensorFlow.
"""

import contextlib
import dataclasses
import json
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
from tbpipe.components.promotion.config import PROMOTION_METRICS, PromoteConfig
from tbpipe.components.selection.core import FINETUNE_MODES
from tbpipe.components.training.config import PRECISIONS, TrainConfig
from tbpipe.pipelines.placement import CompileOptions, configure_task
from tbpipe.pipelines.sweep import Sweep

PIPELINE_NAME = "tbpipe-training"
#: Allowed values of the parameters that have a fixed set (``--help`` lists them).
PARAM_CHOICES = MappingProxyType({"finetune": FINETUNE_MODES, "precision": PRECISIONS,
                                  "promotion_metric": PROMOTION_METRICS})


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
    ``promote_to``: the production folder the run's model is copied to only if it beats
    ``baseline_model`` (empty: what ``promote_to`` holds) by ``min_improvement`` on
    ``promotion_metric`` (or ``force_promote``); empty: no promote step. ``gate``: a gate
    file's YAML text (docs/gate.md; ``--gate FILE`` reads it where tbpipe runs), instead of
    that shorthand; ``reason``: why ``force_promote`` (required with it); ``mlflow_uri``:
    also register each promotion in this MLflow tracking server.
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
    baseline_model: str = ""
    promote_to: str = ""
    min_improvement: float = PromoteConfig.min_improvement
    promotion_metric: str = PromoteConfig.promotion_metric
    force_promote: bool = PromoteConfig.force_promote
    gate: str = PromoteConfig.gate
    reason: str = PromoteConfig.reason
    mlflow_uri: str = PromoteConfig.mlflow_uri

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
            (PromoteConfig, {"promotion_metric": "promotion_metric",
                             "min_improvement": "min_improvement",
                             "force_promote": "force_promote", "gate": "gate",
                             "reason": "reason", "mlflow_uri": "mlflow_uri"}),
        )
        for needs_target in ("baseline_model", "force_promote", "gate", "mlflow_uri"):
            if getattr(self, needs_target) and not self.promote_to:
                flag = "--" + needs_target.replace("_", "-")
                raise SettingError(flag, getattr(self, needs_target),
                                   "needs --promote-to (the folder the winner is copied to)")
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


def build_training_pipeline(options: CompileOptions | None = None,  # noqa: ANN201
                            sweep: Sweep | None = None):
    """Tbpipe's ``@dsl.pipeline`` function, with ``options`` applied to every task.

    Use it as a pipeline of its own, or call it inside yours (its output is the selection
    summary as JSON). ``sweep``: train once per trial in a ``dsl.ParallelFor`` (parallelism
    ``sweep.max_parallel``) and go on with the best trial's model (``select-trial``); its
    trial table joins the summary as ``sweep``. Without one, the DAG has one train step.
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
        baseline_model: str = defaults.baseline_model, promote_to: str = defaults.promote_to,
        min_improvement: float = defaults.min_improvement,
        promotion_metric: str = defaults.promotion_metric,
        force_promote: bool = defaults.force_promote, gate: str = defaults.gate,
        reason: str = defaults.reason, mlflow_uri: str = defaults.mlflow_uri,
    ) -> str:
        where = dict(log_root=log_root, experiment=experiment, run_name=run_name, resume=resume)
        # select-model writes the run's _summary.json (tbpipe runs)
        summary_at = dict(log_root=log_root, experiment=experiment, run_name=run_name,
                          tensorboard_url=tensorboard_url)
        prep = step(components.preprocess(data=data, val_fraction=val_fraction,
                                          test_fraction=test_fraction, seed=seed,
                                          image_size=image_size, channels=channels, **where),
                    "preprocess")
        train_args = dict(train_data=prep.outputs["train_data"],
                          val_data=prep.outputs["val_data"], epochs=epochs,
                          batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                          checkpoint_root=checkpoint_root, precision=precision,
                          model_spec=model, model_source=model_source, **where)
        if sweep is None:
            trained_model = step(components.train(**train_args), "train").outputs["model"]
            swept = {}
        else:
            trained_model, table = sweep_trials(sweep, train_args, step)
            swept = {"sweep": table}
        scored = step(components.evaluate(model=trained_model,
                                          test_data=prep.outputs["test_data"],
                                          accuracy_target=accuracy_target, step_name="evaluate",
                                          tensorboard_url=tensorboard_url, **where), "evaluate")
        decision = step(components.decide_finetune(
            mode=finetune, meets_target=scored.outputs["meets_target"],
            finetune_data=finetune_data), "decide-finetune")

        def finetune_and_select(train_data, val_data):  # noqa: ANN001, ANN202
            tuned = step(components.finetune(
                model=trained_model, train_data=train_data, val_data=val_data,
                epochs=finetune_epochs, learning_rate=finetune_learning_rate,
                freeze_layers=freeze_layers, batch_size=batch_size, seed=seed,
                checkpoint_root=checkpoint_root, precision=precision, **where), "finetune")
            rescored = step(components.evaluate(
                model=tuned.outputs["finetuned_model"], test_data=prep.outputs["test_data"],
                accuracy_target=accuracy_target, step_name="evaluate-finetuned",
                tensorboard_url=tensorboard_url, **where), "evaluate-finetuned")
            return step(components.select_model(
                trained_model=trained_model, trained_accuracy=scored.outputs["accuracy"],
                finetuned_model=tuned.outputs["finetuned_model"],
                finetuned_accuracy=rescored.outputs["accuracy"], **summary_at, **swept),
                "select-model")

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
            kept = step(components.select_model(trained_model=trained_model,
                                                trained_accuracy=scored.outputs["accuracy"],
                                                **summary_at, **swept),
                        "select-model")
        selected = dsl.OneOf(same.outputs["Output"], other.outputs["Output"],
                             kept.outputs["Output"])
        with dsl.If(promote_to != "", name="promote-if-set"):  # skipped: costs nothing
            step(components.promote(
                selection=selected, test_data=prep.outputs["test_data"], promote_to=promote_to,
                baseline_model=baseline_model, min_improvement=min_improvement,
                promotion_metric=promotion_metric, force_promote=force_promote, gate=gate,
                reason=reason, mlflow_uri=mlflow_uri, tensorboard_url=tensorboard_url, **where),
                 "promote").set_caching_options(False)  # production may have changed since
        return selected

    return training_pipeline


def sweep_trials(sweep: Sweep, train_args: dict, step):  # noqa: ANN001, ANN201
    """A train step per trial in a ``dsl.ParallelFor``, then ``select-trial``.

    Each trial trains with ``train_args`` and its own values, logging to
    ``{log_root}/{experiment}/{run}/trial-NN/train``. Returns the best trial's model and the
    trial table (JSON), the outputs of ``select-trial``.
    """
    items = sweep.loop_items()
    with dsl.ParallelFor(items, parallelism=sweep.max_parallel, name="sweep") as item:
        own = {name: loop_field(item, name) for name in items[0]}
        trial = step(components.train(**{**train_args, **own}), "train")
    chosen = step(components.select_trial(models=dsl.Collected(trial.outputs["model"]),
                                          trials=json.dumps(sweep.trials())), "select-trial")
    return chosen.outputs["best_model"], chosen.outputs["Output"]


#: The names KFP compiles to that hold tbpipe's pipeline. kfp 2.17 also takes ``.json``
#: (deprecated), but only for pipelines without platform settings, and tbpipe's has them
#: (node selectors, tolerations): it would empty the file, then fail.
YAML_SUFFIXES = (".yaml", ".yml")


def loop_field(item, name: str):  # noqa: ANN001, ANN201 - a kfp LoopArgumentVariable
    """The field ``name`` of a ``dsl.ParallelFor``'s dict item, to pass to a step.

    KFP gives every field of a dict item the type of the item's first value (kfp 2.17,
    ``for_loop._get_first_element_type``), so an int field next to a str one would not pass
    its type check. A field marked ``String``, KFP's type for a loop item of unknown type,
    passes to a parameter of any type; the step's config checks the value when it runs
    (the sweep's values were checked when the Sweep was built).
    """
    field = getattr(item, name)
    field.channel_type = "String"
    return field


def compile_pipeline(package_path: str, options: CompileOptions | None = None,
                     sweep: Sweep | None = None) -> str:
    """Compile tbpipe's pipeline to a KFP v2 YAML at ``package_path``; returns the path.

    ``sweep``: compile its trials in (see :func:`build_training_pipeline`). The YAML goes
    to a temporary sibling, then replaces ``package_path`` in one rename, so
    a file already there is never emptied or half-written.

    Raises:
        InputError: ``package_path`` does not end in ``.yaml``/``.yml`` (checked before any
            file is touched).
        StorageError: it cannot be written (one line naming it and the cause).

    """
    if not package_path.endswith(YAML_SUFFIXES):
        raise InputError(f"{package_path}: KFP compiles tbpipe's pipeline to YAML only; "
                         "use a name ending in .yaml or .yml")
    pipeline = build_training_pipeline(options, sweep)
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
