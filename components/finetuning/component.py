"""The finetune step as a KFP component: translation between artifacts and ``finetune_model``."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from tbpipe.components._image import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def finetune(model: Input[Model], train_data: Input[Dataset], val_data: Input[Dataset],
             finetuned_model: Output[Model], metrics: Output[Metrics], log_root: str,
             experiment: str = "default", run_name: str = "",
             job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER, epochs: int = 3,
             learning_rate: float = 0.0001, freeze_layers: int = 0, batch_size: int = 32,
             seed: int = 42, checkpoint_root: str = "", flush_secs: int = 5,
             precision: str = "auto", resume: bool = False, workers: int = 1) -> None:
    """Fine-tune a trained model (optionally on other data); logs go to .../{run}/finetune.

    The run is ``run_name``, else the KFP job's name. Checkpoints go to
    {checkpoint_root}/{experiment}/{run}/checkpoints/finetune (default root:
    {log_root}-checkpoints, beside the log root). Defaults:
    FinetuneConfig's (a test holds them equal); ``precision``: auto, float32, mixed_float16 or
    mixed_bfloat16. The run is claimed for this KFP job (see preprocess). ``workers``: as
    train's (multi-worker training, ``batch_size`` per device).
    """
    from tbpipe.components.common.errors import exit_on_error
    from tbpipe.components.common.naming import checkpoint_dir_for, step_place
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_claim import claim_run, run_owner
    from tbpipe.components.finetuning.config import FinetuneConfig
    from tbpipe.components.training.worker import WorkerTask, run_fit_step

    step = "finetune"
    with exit_on_error(step):
        run, log_dir = step_place(log_root, experiment, run_name, job_name, step,
                                  finetuned_model.uri)
        config = FinetuneConfig(
            epochs=epochs, learning_rate=learning_rate, freeze_layers=freeze_layers,
            batch_size=batch_size, seed=seed, flush_secs=flush_secs, precision=precision,
            workers=workers,
            checkpoint_dir=checkpoint_dir_for(log_root, checkpoint_root, experiment, run,
                                              step))
        claim_run(log_root, experiment, run, run_owner(job_name, finetuned_model.uri), resume)
        result = run_fit_step(WorkerTask(step, config, train_data.path, val_data.path,
                                         finetuned_model.path, log_dir,
                                         base_model_uri=model.path))
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    metrics.log_metric("epochs", result.epochs_run)
    report_result(step, f"val_accuracy {result.metrics['val_accuracy']:.4f}")
    finetuned_model.metadata.update({"framework": "keras", "epochs": result.epochs_run,
                                     "resumed_from_epoch": result.resumed_from_epoch,
                                     **result.metrics})
