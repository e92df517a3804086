"""The training pipeline: preprocess -> train -> evaluate -> [finetune -> evaluate] -> select.

Wiring only: every step's logic lives in ``components/``. Compiling imports no TensorFlow.
"""


from kfp import compiler, dsl

from components.evaluate.component import evaluate
from components.finetune.component import finetune as finetune_component
from components.preprocess.component import preprocess
from components.select.component import decide_finetune, select_model
from components.train.component import train
from pipelines.options import PipelineParams
from pipelines.placement import CompileOptions, configure_task

PIPELINE_NAME = "tbpipe-training"
D = PipelineParams()


def build_pipeline(options: CompileOptions = CompileOptions()):  # noqa: B008, ANN201
    """The ``@dsl.pipeline`` function, with ``options`` applied to every task."""

    def step(task, name: str):  # noqa: ANN001, ANN202
        return configure_task(task.set_display_name(name), name, options)

    @dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])
    def training_pipeline(
        data: str = D.data, finetune_data: str = D.finetune_data, log_root: str = D.log_root,
        experiment: str = D.experiment, run_name: str = D.run_name, epochs: int = D.epochs,
        batch_size: int = D.batch_size, learning_rate: float = D.learning_rate, seed: int = D.seed,
        val_fraction: float = D.val_fraction, test_fraction: float = D.test_fraction,
        accuracy_target: float = D.accuracy_target, finetune: str = D.finetune,
        finetune_epochs: int = D.finetune_epochs,
        finetune_learning_rate: float = D.finetune_learning_rate,
        freeze_layers: int = D.freeze_layers, tensorboard_url: str = D.tensorboard_url,
        checkpoint_root: str = D.checkpoint_root, precision: str = D.precision,
    ) -> str:
        where = dict(log_root=log_root, experiment=experiment, run_name=run_name,
                     job_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
        prep = step(preprocess(data=data, val_fraction=val_fraction, test_fraction=test_fraction,
                               seed=seed, **where), "preprocess")
        trained = step(train(train_data=prep.outputs["train_data"],
                             val_data=prep.outputs["val_data"], epochs=epochs,
                             batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                             checkpoint_root=checkpoint_root, precision=precision, **where),
                       "train")
        scored = step(evaluate(model=trained.outputs["model"],
                               test_data=prep.outputs["test_data"],
                               accuracy_target=accuracy_target, step_name="evaluate",
                               tensorboard_url=tensorboard_url, **where), "evaluate")
        decision = step(decide_finetune(mode=finetune, meets_target=scored.outputs["meets_target"],
                                        finetune_data=finetune_data), "decide-finetune")

        def finetune_and_select(train_data, val_data):  # noqa: ANN001, ANN202
            tuned = step(finetune_component(model=trained.outputs["model"], train_data=train_data,
                                  val_data=val_data, epochs=finetune_epochs,
                                  learning_rate=finetune_learning_rate,
                                  freeze_layers=freeze_layers, batch_size=batch_size, seed=seed,
                                  checkpoint_root=checkpoint_root, precision=precision,
                                  **where), "finetune")
            rescored = step(evaluate(model=tuned.outputs["finetuned_model"],
                                     test_data=prep.outputs["test_data"],
                                     accuracy_target=accuracy_target,
                                     step_name="evaluate-finetuned",
                                     tensorboard_url=tensorboard_url, **where),
                            "evaluate-finetuned")
            return step(select_model(trained_model=trained.outputs["model"],
                                     trained_accuracy=scored.outputs["accuracy"],
                                     finetuned_model=tuned.outputs["finetuned_model"],
                                     finetuned_accuracy=rescored.outputs["accuracy"]),
                        "select-model")

        with dsl.If(decision.output == "same-data", name="finetune-same-data"):
            same = finetune_and_select(prep.outputs["train_data"], prep.outputs["val_data"])
        with dsl.Elif(decision.output == "other-data", name="finetune-other-data"):
            other_prep = step(preprocess(data=finetune_data, val_fraction=val_fraction,
                                         test_fraction=0.0, seed=seed,
                                         step_name="preprocess-finetune-data", **where),
                              "preprocess-finetune-data")
            other = finetune_and_select(other_prep.outputs["train_data"],
                                        other_prep.outputs["val_data"])
        with dsl.Else(name="keep-trained-model"):
            kept = step(select_model(trained_model=trained.outputs["model"],
                                     trained_accuracy=scored.outputs["accuracy"]),
                        "select-model")
        return dsl.OneOf(same.outputs["Output"], other.outputs["Output"], kept.outputs["Output"])

    return training_pipeline


def compile_pipeline(package_path: str, options: CompileOptions = CompileOptions()) -> str:  # noqa: B008
    """Compile the pipeline to a KFP v2 YAML at ``package_path``; returns the path."""
    compiler.Compiler().compile(build_pipeline(options), package_path=package_path)
    return package_path
