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
             precision: str = "auto", resume: bool = False, worker_placement: str = "",
             workers: int = 1, profile_batch: str = "") -> None:
    """Fine-tune a trained model (optionally on other data); logs go to .../{run}/finetune.

    Checkpoints go to ``{checkpoint_root}/{experiment}/{run}/checkpoints/finetune``. The run
    is claimed for this KFP job (see preprocess). Defaults: FinetuneConfig's (a test holds
    them equal).

    Args:
        model: The trained model to start from (train's ``model``).
        train_data: The examples to fine-tune on (the training data, or another set's).
        val_data: The validation examples, scored after every epoch.
        log_root: Where every step's TensorBoard logs go; this step's are
            ``{log_root}/{experiment}/{run}/finetune``.
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        epochs: How many passes over the fine-tuning data.
        learning_rate: The Adam optimizer's learning rate (lower than training's).
        freeze_layers: How many of the model's first layers keep their weights.
        batch_size: Examples per training batch.
        seed: The seed of shuffling.
        checkpoint_root: Where checkpoints go; empty: the log root's sibling
            ``{log_root}-checkpoints``, outside TensorBoard's tree.
        flush_secs: How often (seconds) the event files are flushed for TensorBoard to see.
        precision: auto, float32, mixed_float16 or mixed_bfloat16.
        resume: Continue a run of this name that another KFP job claimed, from its
            checkpoints.
        workers: As train's: above 1, fine-tune over that many worker processes
            (``batch_size`` stays per device).
        worker_placement: Where a multi-worker step's workers run on a cluster (image,
            GPUs, node selectors, resources, engine): the JSON of
            ``launcher.placement.WorkerPlacement`` the pipeline compiles; empty: none.
        profile_batch: As train's: ``A,B`` profiles global batches A to B into the step's
            log folder; empty: no profile.

    Returns:
        finetuned_model: The fine-tuned model (a tbpipe Model folder).
        metrics: The last epoch's loss, accuracy, val_loss and val_accuracy, and the
            epochs run.
    """
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.common.storage import artifact_uri
    from tbpipe.components.finetuning.config import FinetuneConfig
    from tbpipe.components.training.worker import WorkerTask, on_cluster, run_fit_step

    step = "finetune"
    with step_run(step, finetuned_model.uri, log_root, experiment, run_name, job_name,
                  resume) as here:
        config = FinetuneConfig(
            epochs=epochs, learning_rate=learning_rate, freeze_layers=freeze_layers,
            batch_size=batch_size, seed=seed, flush_secs=flush_secs, precision=precision,
            workers=workers, profile_batch=profile_batch,
            checkpoint_dir=here.checkpoint_dir(checkpoint_root))
        here.claim()
        remote = on_cluster(worker_placement)  # worker pods read the artifacts from the store
        train_in, val_in, base = ((artifact_uri(a.uri) if remote else a.path)
                                  for a in (train_data, val_data, model))
        result = run_fit_step(WorkerTask(step, config, train_in, val_in, finetuned_model.path,
                                         here.log_dir, base_model_uri=base),
                              placement=worker_placement)
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    metrics.log_metric("epochs", result.epochs_run)
    report_result(step, f"val_accuracy {result.metrics['val_accuracy']:.4f}")
    finetuned_model.metadata.update({"framework": "keras", "epochs": result.epochs_run,
                                     "resumed_from_epoch": result.resumed_from_epoch,
                                     **result.metrics})
