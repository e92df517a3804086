"""tbpipe's pipeline: preprocess -> check-data -> train -> evaluate -> [finetune] -> select.

Then, with ``promote_to``, promote: the selected model goes to production only if it wins.

Wiring only: every step's logic lives in ``tbpipe.components``, where each placement comes
from :mod:`tbpipe.pipelines.placement`. The pipeline's run-time parameters are the table
the steps declare (:func:`tbpipe.components.registry.param_table`): :class:`PipelineParams`
and the pipeline function's signature are generated from it, so a parameter is one field in
its step's config plus its use in the DAG below. Compiling imports no TensorFlow.
"""

import contextlib
import dataclasses
import inspect
import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

from kfp import compiler, dsl

from tbpipe import components
from tbpipe.components.common.errors import InputError, os_errors
from tbpipe.components.registry import param_groups, param_table
from tbpipe.components.selection.config import TuneConfig
from tbpipe.pipelines.kfp_compat import loop_field
from tbpipe.pipelines.placement import CompileOptions, configure_task, worker_placement
from tbpipe.pipelines.sweep import Sweep

PIPELINE_NAME = "tbpipe-training"


class _ParamsBehaviour:
    """What :class:`PipelineParams` does besides holding the table's values."""

    def __post_init__(self) -> None:
        """Parse once, at the edge: a parameter with a ``parse`` (``model``) holds its value."""
        for param in param_table().values():
            if param.parse is not None:
                object.__setattr__(self, param.name, param.parse(getattr(self, param.name)))

    def as_values(self) -> dict[str, object]:
        """Every parameter's value by name."""
        return {name: getattr(self, name) for name in param_table()}

    def validate(self) -> "PipelineParams":
        """Check every parameter before anything runs, by the part that declares it.

        Each setting is checked once, where its step's config is built; the error names the
        flag (``--finetune-epochs=0: must be a positive integer``).
        """
        values = self.as_values()
        for group in param_groups():
            group.validate(values)
        return self

    def with_model_source(self) -> "PipelineParams":
        """These parameters with ``model_source`` read from a ``file.py:function`` model.

        Where it was not given: the file's text travels to the train step, wherever it runs.
        InputError (one line) if the file cannot be read.
        """
        if self.model_source:
            return self
        return dataclasses.replace(self, model_source=self.model.read_source())

    def as_arguments(self) -> dict[str, object]:
        """The parameters as pipeline arguments (plain str, int, float and bool)."""
        return {name: param.type(getattr(self, name))
                for name, param in param_table().items()}


#: Run-time parameters of the training pipeline (the compiled spec's inputs), one field per
#: parameter of :func:`~tbpipe.components.registry.param_table`, with its type and default.
#: ``model`` holds a parsed :class:`~tbpipe.components.training.config.ModelSpec`.
PipelineParams = dataclasses.make_dataclass(
    "PipelineParams",
    [(name, param.type, dataclasses.field(default=param.default))
     for name, param in param_table().items()],
    bases=(_ParamsBehaviour,), frozen=True)
PipelineParams.__module__ = __name__
PipelineParams.__doc__ = (
    "Run-time parameters of the training pipeline, generated from the steps' table.\n\n"
    "Fields: " + ", ".join(param_table()) + " (docs/parameters.md).")


def pipeline_signature(options: CompileOptions) -> inspect.Signature:
    """The pipeline function's signature: one parameter per table entry, typed, defaulted.

    ``log_root`` defaults to ``options.default_log_root`` (a path on ``--log-volume``),
    ``workers`` to ``options.workers`` where it is set (``compile --workers``).
    """
    defaults = {name: param.default for name, param in param_table().items()}
    defaults["log_root"] = options.default_log_root or defaults["log_root"]
    if options.workers is not None:  # compile --workers
        defaults["workers"] = options.workers
    if options.notify:  # compile --notify: the exit task's targets
        defaults["notify"] = options.notify
    return inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           default=defaults[name], annotation=param.type)
         for name, param in param_table().items()], return_annotation=str)


def pipeline_docstring() -> str:
    """The pipeline's docstring: its first line, then ``Args:`` from the table (KFP shows them)."""
    args = "\n".join(f"    {name}: {param.help}" for name, param in param_table().items())
    return f"{__doc__.splitlines()[0]}\n\nArgs:\n{args}\n"


def build_training_pipeline(options: CompileOptions | None = None,  # noqa: ANN201
                            sweep: Sweep | TuneConfig | None = None):
    """Tbpipe's ``@dsl.pipeline`` function, with ``options`` applied to every task.

    Use it as a pipeline of its own, or call it inside yours (its output is the selection
    summary as JSON). ``sweep``: train once per trial in a ``dsl.ParallelFor`` (parallelism
    ``sweep.max_parallel``) and go on with the best trial's model (``select-trial``); its
    trial table joins the summary as ``sweep``. A search (``TuneConfig``, ``--tune``): rounds
    of trials (:func:`tune_trials`), the best trial's batch size, seed and precision going on
    to finetune. Without either, the DAG has one train step.
    With ``options.notify``, the DAG runs inside a ``dsl.ExitHandler`` whose ``notify`` task
    sends the outcome (succeeded, failed, cancelled) to the ``notify`` parameter's targets,
    and the pipeline has no output (KFP takes none from inside an exit handler); without,
    there is no exit task.
    """
    options = options or CompileOptions()
    signature = pipeline_signature(options)

    def step(task, name: str):  # noqa: ANN001, ANN202
        return configure_task(task.set_display_name(name), name, options)

    def training_pipeline(*args, **kwargs) -> str:  # noqa: ANN002, ANN003
        p = SimpleNamespace(**signature.bind(*args, **kwargs).arguments)
        if not options.notify:
            return training_dag(p)
        told = step(components.notify(notify=p.notify, log_root=p.log_root,
                                      experiment=p.experiment, run_name=p.run_name,
                                      tensorboard_url=p.tensorboard_url), "notify")
        with dsl.ExitHandler(told.set_caching_options(False), name="notify-on-exit"):
            training_dag(p)  # KFP takes no pipeline output from inside an exit handler
        return None

    def training_dag(p: SimpleNamespace) -> str:
        where = dict(log_root=p.log_root, experiment=p.experiment, run_name=p.run_name,
                     resume=p.resume)
        # select-model writes the run's _summary.json (tbpipe runs)
        summary_at = dict(log_root=p.log_root, experiment=p.experiment, run_name=p.run_name,
                          tensorboard_url=p.tensorboard_url)
        prep = step(components.preprocess(data=p.data, val_fraction=p.val_fraction,
                                          test_fraction=p.test_fraction, seed=p.seed,
                                          image_size=p.image_size, channels=p.channels,
                                          **where),
                    "preprocess")
        # before train: --data-checks strict stops a run on leaky data before it trains;
        # not cached: the champion it compares with may have changed since
        checked = step(components.check_data(
            train_data=prep.outputs["train_data"], val_data=prep.outputs["val_data"],
            test_data=prep.outputs["test_data"], stats=prep.outputs["stats"],
            data_checks=p.data_checks, promote_to=p.promote_to, seed=p.seed,
            tensorboard_url=p.tensorboard_url, **where), "check-data").set_caching_options(False)
        train_args = dict(train_data=prep.outputs["train_data"],
                          val_data=prep.outputs["val_data"], epochs=p.epochs,
                          batch_size=p.batch_size, learning_rate=p.learning_rate, seed=p.seed,
                          checkpoint_root=p.checkpoint_root, precision=p.precision,
                          model_spec=p.model, model_source=p.model_source, workers=p.workers,
                          profile_batch=p.profile_batch,
                          worker_placement=worker_placement(options, "train"), **where)
        fit_args = dict(batch_size=p.batch_size, seed=p.seed, precision=p.precision)
        if sweep is None:
            trained_model = step(components.train(**train_args), "train").after(
                checked).outputs["model"]
            swept = {}
        elif isinstance(sweep, TuneConfig):
            chosen = tune_trials(sweep, train_args, step, where, after=checked)
            trained_model, swept = chosen.outputs["best_model"], {"sweep": chosen.outputs["trials"]}
            fit_args = {name: chosen.outputs[name] for name in fit_args}
        else:
            trained_model, table = sweep_trials(sweep, train_args, step, after=checked)
            swept = {"sweep": table}
        scored = step(components.evaluate(model=trained_model,
                                          test_data=prep.outputs["test_data"],
                                          accuracy_target=p.accuracy_target,
                                          step_name="evaluate",
                                          tensorboard_url=p.tensorboard_url, **where),
                      "evaluate")
        decision = step(components.decide_finetune(
            mode=p.finetune, meets_target=scored.outputs["meets_target"],
            finetune_data=p.finetune_data, drifted=checked.outputs["drifted"]),
            "decide-finetune")

        def finetune_and_select(train_data, val_data):  # noqa: ANN001, ANN202
            tuned = step(components.finetune(
                model=trained_model, train_data=train_data, val_data=val_data,
                epochs=p.finetune_epochs, learning_rate=p.finetune_learning_rate,
                freeze_layers=p.freeze_layers, checkpoint_root=p.checkpoint_root,
                workers=p.workers, profile_batch=p.profile_batch, **fit_args,
                worker_placement=worker_placement(options, "finetune"), **where),
                "finetune")
            rescored = step(components.evaluate(
                model=tuned.outputs["finetuned_model"], test_data=prep.outputs["test_data"],
                accuracy_target=p.accuracy_target, step_name="evaluate-finetuned",
                tensorboard_url=p.tensorboard_url, **where), "evaluate-finetuned")
            return step(components.select_model(
                trained_model=trained_model, trained_accuracy=scored.outputs["accuracy"],
                finetuned_model=tuned.outputs["finetuned_model"],
                finetuned_accuracy=rescored.outputs["accuracy"], **summary_at, **swept),
                "select-model")

        with dsl.If(decision.output == "same-data", name="finetune-same-data"):
            same = finetune_and_select(prep.outputs["train_data"], prep.outputs["val_data"])
        with dsl.Elif(decision.output == "other-data", name="finetune-other-data"):
            other_prep = step(components.preprocess(
                data=p.finetune_data, val_fraction=p.val_fraction, test_fraction=0.0,
                seed=p.seed, image_size=p.image_size, channels=p.channels,
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
        with dsl.If(p.promote_to != "", name="promote-if-set"):  # skipped: costs nothing
            step(components.promote(
                selection=selected, test_data=prep.outputs["test_data"],
                promote_to=p.promote_to, baseline_model=p.baseline_model,
                min_improvement=p.min_improvement, promotion_metric=p.promotion_metric,
                force_promote=p.force_promote, gate=p.gate, reason=p.reason,
                mlflow_uri=p.mlflow_uri, inference_service=p.inference_service,
                tensorboard_url=p.tensorboard_url,
                drift_p_value=checked.outputs["drift_p_value"], **where),
                 "promote").set_caching_options(False)  # production may have changed since
        return selected

    returns = None if options.notify else str
    training_pipeline.__signature__ = signature.replace(return_annotation=returns)
    training_pipeline.__annotations__ = {
        **{name: param.annotation for name, param in signature.parameters.items()},
        "return": returns}
    training_pipeline.__doc__ = pipeline_docstring()
    return dsl.pipeline(name=PIPELINE_NAME,
                        description=__doc__.splitlines()[0])(training_pipeline)


def sweep_trials(sweep: Sweep, train_args: dict, step, after=None):  # noqa: ANN001, ANN201
    """A train step per trial in a ``dsl.ParallelFor`` (after ``after``), then ``select-trial``.

    Each trial trains with ``train_args`` and its own values, logging to
    ``{log_root}/{experiment}/{run}/trial-NN/train``. Returns the best trial's model and the
    trial table (JSON), the outputs of ``select-trial``.
    """
    items = sweep.loop_items()
    with dsl.ParallelFor(items, parallelism=sweep.max_parallel, name="sweep") as item:
        own = {name: loop_field(item, name) for name in items[0]}
        trial = step(components.train(**{**train_args, **own}), "train")
        if after is not None:
            trial.after(after)
    chosen = step(components.select_trial(models=dsl.Collected(trial.outputs["model"]),
                                          trials=json.dumps(sweep.trials())), "select-trial")
    return chosen.outputs["best_model"], chosen.outputs["Output"]


def tune_trials(tune: TuneConfig, train_args: dict, step, where: dict,  # noqa: ANN001, ANN201
                after):  # noqa: ANN001
    """The search's rounds, then ``select-tuned``; returns the select-tuned task.

    Round ``r`` is a ``suggest`` step (after round ``r-1``'s trials) that reads the study
    under ``{log_root}/{experiment}/{run}/study/`` and returns its trials' settings, then a
    ``dsl.ParallelFor`` over them (``tune.parallel`` at once) of train steps, each logging to
    ``.../{run}/trial-NN/train`` and recording its outcome (pruned, failed) in the study. A
    round suggested after the goal is met, or past the timeout, has no trials: its loop
    trains nothing. ``select-tuned`` (after the last round) picks the best trial by the
    objectives, or fails with one line when more than ``tune.max_failed`` trials failed.
    The first round starts ``after`` that task (the data checks).
    """
    fields = tune_item_fields(tune)
    trials = after
    for number, count in enumerate(tune.rounds(), start=1):
        suggested = step(components.suggest(tune=tune.to_json(), count=count,
                                            seed=train_args["seed"], **where), "suggest")
        suggested.after(trials)
        with dsl.ParallelFor(suggested.output, parallelism=tune.parallel,
                             name=f"tune-round-{number}") as item:
            own = {name: loop_field(item, name) for name in fields}
            trials = step(components.train(**{**train_args, **own, "pruner": tune.pruner}),
                          "train")
    return step(components.select_tuned(
        tune=tune.to_json(), batch_size=train_args["batch_size"], seed=train_args["seed"],
        precision=train_args["precision"], **where), "select-tuned").after(trials)


def tune_item_fields(tune: TuneConfig) -> tuple[str, ...]:
    """The fields of a round's items (``suggest``'s output) the train step takes.

    ``trial``, ``tune_study`` (the study's folder), ``tune_trial`` (the trial's number
    there), each tuned train setting, and
    ``model_kwargs`` (the JSON of the tuned ``model.NAME`` keywords) when there are any.
    """
    from tbpipe.components.tuning.space import MODEL_PREFIX

    settings = [key for key in tune.keys if not key.startswith(MODEL_PREFIX)]
    model = ["model_kwargs"] if len(settings) < len(tune.keys) else []
    return ("trial", "tune_study", "tune_trial", *settings, *model)


#: The names KFP compiles to that hold tbpipe's pipeline. kfp 2.17 also takes ``.json``
#: (deprecated), but only for pipelines without platform settings, and tbpipe's has them
#: (node selectors, tolerations): it would empty the file, then fail.
YAML_SUFFIXES = (".yaml", ".yml")


def compile_pipeline(package_path: str, options: CompileOptions | None = None,
                     sweep: Sweep | TuneConfig | None = None) -> str:
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
