"""KFP wrapper of the preprocess step: translation between artifacts and the logic only."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(data: str, train_data: Output[Dataset], val_data: Output[Dataset],
               test_data: Output[Dataset], stats: Output[Metrics], log_root: str,
               experiment: str = "default", run_name: str = "",
               job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
               val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 42,
               step_name: str = "preprocess", resume: bool = False, image_size: str = "",
               channels: int = 0) -> None:
    """Clean, scale and split labelled images into train/val/test Datasets.

    The run is claimed for this KFP job before anything is written: a run of that name that
    another job claimed is refused, unless ``resume``. Defaults: PreprocessConfig's (a test
    holds them equal).

    Args:
        data: The labelled images: a .csv/.csv.gz/.parquet/.pq table (local, gs:// or s3://),
            a folder of MNIST IDX files, a folder of image folders (one per class),
            ``builtin:digits`` or ``builtin:mnist``.
        log_root: Where every step's TensorBoard logs go; this step's are
            ``{log_root}/{experiment}/{run}/{step_name}``.
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        val_fraction: The share of the examples held out for validation.
        test_fraction: The share of the examples held out for the test set.
        seed: The seed of the shuffle before the split.
        step_name: ``preprocess``, or ``preprocess-finetune-data`` for a separate
            fine-tuning data set: the step's log folder.
        resume: Continue a run of this name that another KFP job claimed.
        image_size: ``HxW`` to resize image files to; empty: the files' own size.
        channels: 1 (grayscale) or 3 (RGB) for image files; 0: the files' own.

    Returns:
        train_data: The training examples (a tbpipe Dataset folder).
        val_data: The validation examples (a tbpipe Dataset folder).
        test_data: The test examples (a tbpipe Dataset folder).
        stats: Row counts: read, dropped as bad, kept, and per split.
    """
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data
    from tbpipe.components.preprocessing.summary import result_figure

    with step_run(step_name, train_data.uri, log_root, experiment, run_name, job_name,
                  resume) as here:
        config = PreprocessConfig(val_fraction=val_fraction, test_fraction=test_fraction,
                                  seed=seed, image_size=image_size, channels=channels)
        here.claim()
        result = preprocess_data(data, train_data.path, val_data.path, test_data.path,
                                 here.log_dir, config)
    for artifact, info in ((train_data, result.train), (val_data, result.val),
                           (test_data, result.test)):
        artifact.metadata["num_examples"] = info.num_examples
        artifact.metadata["image_shape"] = list(info.image_shape)
        artifact.metadata["num_classes"] = info.num_classes
    for name, value in result.metrics.items():
        stats.log_metric(name, value)
    report_result(step_name, result_figure(result.stats))
