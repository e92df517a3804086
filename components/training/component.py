"""The train step as a KFP component: translation between artifacts and ``train_model``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from tbpipe.components._image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(train_data: Input[Dataset], val_data: Input[Dataset], model: Output[Model],
          metrics: Output[Metrics], log_root: str, experiment: str = "default",
          run_name: str = "", job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
          epochs: int = 10, batch_size: int = 32, learning_rate: float = 0.001, seed: int = 42,
          checkpoint_root: str = "", flush_secs: int = 5, precision: str = "auto",
          resume: bool = False, model_spec: str = "builtin:cnn", model_source: str = "",
          trial: str = "", workers: int = 1) -> None:
    """Train the starting model ``model_spec``; logs go to {log_root}/{experiment}/{run}/train.

    ``model_spec``: builtin:cnn, path/to/file.py:function (``model_source`` holds the file's
    text, imported from a temporary module), package.module:function (installed in the
    image), a .keras file or a tbpipe Model folder (docs/models.md).

    The run is ``run_name``, else the KFP job's name. Checkpoints go to
    {checkpoint_root}/{experiment}/{run}/checkpoints/train (default root: the log root's
    sibling {log_root}-checkpoints, outside TensorBoard's tree), so a retried or
    preempted attempt resumes from its last complete epoch. ``trial``: a sweep's trial
    (``trial-NN``): logs go to {log_root}/{experiment}/{run}/{trial}/train, checkpoints to
    .../checkpoints/{trial}/train. Defaults: TrainConfig's (a test
    holds them equal); ``precision``: auto, float32, mixed_float16 or mixed_bfloat16. The run
    is claimed for this KFP job (see preprocess; ``resume`` continues another job's run).
    ``workers``: above 1, train with MultiWorkerMirroredStrategy over that many worker
    processes (``python -m tbpipe.components.training.worker``), each on this task's
    devices; ``batch_size`` stays per device (the global batch grows with workers).
    """
    from tbpipe.components.common.errors import exit_on_error
    from tbpipe.components.common.naming import checkpoint_dir_for, step_place
    from tbpipe.components.common.progress import report, report_result
    from tbpipe.components.common.run_claim import claim_run, run_owner
    from tbpipe.components.training.config import TrainConfig
    from tbpipe.components.training.worker import WorkerTask, run_fit_step

    step = "train"
    if trial:  # a sweep's trials show as "train trial-01", ... in tbpipe run
        report(step, "label", label=f"{step} {trial}")
    with exit_on_error(step):
        run, log_dir = step_place(log_root, experiment, run_name, job_name, step, model.uri,
                                  trial)
        config = TrainConfig(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
            flush_secs=flush_secs, precision=precision, model_spec=model_spec,
            model_source=model_source, trial=trial, workers=workers,
            checkpoint_dir=checkpoint_dir_for(log_root, checkpoint_root, experiment, run,
                                              step, trial))
        claim_run(log_root, experiment, run, run_owner(job_name, model.uri), resume)
        result = run_fit_step(WorkerTask(step, config, train_data.path, val_data.path,
                                         model.path, log_dir))
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    metrics.log_metric("epochs", result.epochs_run)
    report_result(step, f"val_accuracy {result.metrics['val_accuracy']:.4f}")
    model.metadata.update({"framework": "keras", "epochs": result.epochs_run,
                           "resumed_from_epoch": result.resumed_from_epoch, **result.metrics})
