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

    ``data`` is a .csv/.csv.gz/.parquet/.pq table (local or gs://), a folder of MNIST IDX
    files, a folder of image folders (one per class; ``image_size`` "HxW" and ``channels``
    1|3, default what the files are), ``builtin:digits`` or ``builtin:mnist``. Logs go to
    ``{log_root}/{experiment}/{run}/{step_name}`` (``preprocess``, or
    ``preprocess-finetune-data`` for a separate fine-tuning data set); the run is
    ``run_name``, else the KFP job's name. Defaults: PreprocessConfig's (a test holds them equal).
    The run is claimed for this KFP job before anything is written: a run of that name that
    another job claimed is refused, unless ``resume`` (continue it).
    """
    from tbpipe.components.common.errors import exit_on_error
    from tbpipe.components.common.naming import step_place
    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_claim import claim_run, run_owner
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data
    from tbpipe.components.preprocessing.summary import result_figure

    with exit_on_error(step_name):
        run, log_dir = step_place(log_root, experiment, run_name, job_name, step_name,
                                train_data.uri)
        config = PreprocessConfig(val_fraction=val_fraction, test_fraction=test_fraction,
                                  seed=seed, image_size=image_size, channels=channels)
        claim_run(log_root, experiment, run, run_owner(job_name, train_data.uri), resume)
        result = preprocess_data(data, train_data.path, val_data.path, test_data.path, log_dir,
                                 config)
    for artifact, info in ((train_data, result.train), (val_data, result.val),
                           (test_data, result.test)):
        artifact.metadata["num_examples"] = info.num_examples
        artifact.metadata["image_shape"] = list(info.image_shape)
        artifact.metadata["num_classes"] = info.num_classes
    for name, value in result.metrics.items():
        stats.log_metric(name, value)
    report_result(step_name, result_figure(result.stats))
