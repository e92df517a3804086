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
          trial: str = "", worker_placement: str = "",
          workers: int = 1, profile_batch: str = "", model_kwargs: str = "",
          tune_study: str = "", tune_trial: int = 0, pruner: str = "none") -> None:
    """Train the starting model ``model_spec`` on a Dataset; logs go to .../{run}/train.

    Checkpoints go to ``{checkpoint_root}/{experiment}/{run}/checkpoints/train``, so a retried
    or preempted attempt resumes from its last complete epoch. The run is claimed for this
    KFP job (see preprocess). Defaults: TrainConfig's (a test holds them equal).

    Args:
        train_data: The training examples (preprocess's ``train_data``).
        val_data: The validation examples, scored after every epoch.
        log_root: Where every step's TensorBoard logs go; this step's are
            ``{log_root}/{experiment}/{run}/train`` (``.../{run}/{trial}/train`` in a sweep).
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        epochs: How many passes over the training data.
        batch_size: Examples per training batch.
        learning_rate: The Adam optimizer's learning rate.
        seed: The seed of weight initialization and shuffling.
        checkpoint_root: Where checkpoints go; empty: the log root's sibling
            ``{log_root}-checkpoints``, outside TensorBoard's tree.
        flush_secs: How often (seconds) the event files are flushed for TensorBoard to see.
        precision: auto, float32, mixed_float16 or mixed_bfloat16 (auto: mixed on a GPU
            that gains from it, else float32).
        resume: Continue a run of this name that another KFP job claimed, from its
            checkpoints.
        model_spec: The starting model: builtin:cnn, path/to/file.py:function,
            package.module:function (installed in the image), a .keras file or a tbpipe
            Model folder (docs/models.md).
        model_source: The text of a ``file.py:function`` spec's file (imported from a
            temporary module); empty for the other kinds.
        trial: A sweep's trial (``trial-NN``) whose logs and checkpoints go to their own
            ``{trial}/train`` folders; empty outside a sweep.
        workers: Above 1, train with MultiWorkerMirroredStrategy over that many worker
            processes (``python -m tbpipe.components.training.worker``), each on this task's
            devices; ``batch_size`` stays per device (the global batch grows with workers).
        worker_placement: Where a multi-worker step's workers run on a cluster (image,
            GPUs, node selectors, resources, engine): the JSON of
            ``launcher.placement.WorkerPlacement`` the pipeline compiles; empty: none.
        profile_batch: ``A,B``: profile global batches A to B with the TensorFlow profiler
            into the step's log folder (TensorBoard's Profile tab); empty: no profile.
        model_kwargs: Keyword arguments for a ``file.py:function`` or
            ``package.module:function`` model, a JSON object (a tuning trial's ``model.NAME``
            parameters); empty: none.
        tune_study: The study folder of the tuning trial this step is; its curve, pruning
            and end state go there. Empty: not a tuning trial.
        tune_trial: The trial's number in that study.
        pruner: Stops a tuning trial early: none, median or hyperband.

    Returns:
        model: The trained model (a tbpipe Model folder: ``model.keras`` and ``model.json``).
        metrics: The last epoch's loss, accuracy, val_loss and val_accuracy, and the
            epochs run.
    """
    import os

    from tbpipe.components.common.progress import report, report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.common.storage import artifact_uri
    from tbpipe.components.training.config import TrainConfig
    from tbpipe.components.training.worker import WorkerTask, on_cluster, run_fit_step

    step = "train"
    if trial:  # a sweep's trials show as "train trial-01", ... in tbpipe run
        report(step, "label", label=f"{step} {trial}")
    try:
        with step_run(step, model.uri, log_root, experiment, run_name, job_name, resume,
                      trial) as here:
            config = TrainConfig(
                epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                flush_secs=flush_secs, precision=precision, model_spec=model_spec,
                model_source=model_source, trial=trial, workers=workers,
                profile_batch=profile_batch, model_kwargs=model_kwargs,
                tune_study=tune_study, tune_trial=tune_trial, pruner=pruner,
                checkpoint_dir=here.checkpoint_dir(checkpoint_root))
            here.claim()
            remote = on_cluster(worker_placement)  # worker pods read the artifacts from the store
            inputs = [artifact_uri(a.uri) if remote else a.path for a in (train_data, val_data)]
            result = run_fit_step(WorkerTask(step, config, *inputs, model.path, here.log_dir),
                                  placement=worker_placement)
            record = None
            if tune_study:  # the trial's end state, as its record in the study holds it
                from tbpipe.components.tuning.study import read_trial

                record = read_trial(tune_study, tune_trial)
    except SystemExit:  # the step's one error line is printed
        if not tune_study:
            raise
        # A tuning trial's failure is in its study (or, if it ended before its record was
        # written, marked there by the next suggest): the round goes on, and the search fails
        # only past --max-failed-trials. The model folder holds no model (KFP uploads it).
        os.makedirs(model.path, exist_ok=True)
        model.metadata.update({"tune_state": "failed"})
        report_result(step, "failed: recorded in the study, the search goes on")
        return
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    metrics.log_metric("epochs", result.epochs_run)
    state = ""
    if record is not None:
        state = f" ({record.state} after {record.epochs_run} of {epochs} epochs)"
        model.metadata["tune_state"] = record.state
    report_result(step, f"val_accuracy {result.metrics['val_accuracy']:.4f}{state}")
    model.metadata.update({"framework": "keras", "epochs": result.epochs_run,
                           "resumed_from_epoch": result.resumed_from_epoch, **result.metrics})
