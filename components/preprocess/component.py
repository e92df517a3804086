"""KFP wrapper of the preprocess step: translation between artifacts and the logic only."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components._image import IMAGE

STEP = "preprocess"


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def preprocess(data: str, train_data: Output[Dataset], val_data: Output[Dataset],
               test_data: Output[Dataset], stats: Output[Metrics], log_root: str,
               experiment: str, run_name: str, job_name: str, val_fraction: float = 0.1,
               test_fraction: float = 0.2, seed: int = 42) -> None:
    """Clean, scale and split labelled images into train/val/test Datasets.

    ``data`` is a .csv/.csv.gz/.parquet/.pq table (local or gs://), a folder of MNIST IDX
    files, ``builtin:digits`` or ``builtin:mnist``. Logs go to
    ``{log_root}/{experiment}/{run}/preprocess``.
    """
    from components.common.naming import resolve_run, step_log_dir
    from components.preprocess.core import STEP, PreprocessConfig, preprocess_data

    log_dir = step_log_dir(log_root, experiment, resolve_run(run_name, job_name), STEP)
    config = PreprocessConfig(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    result = preprocess_data(data, train_data.path, val_data.path, test_data.path, log_dir,
                             config)
    for artifact, info in ((train_data, result.train), (val_data, result.val),
                           (test_data, result.test)):
        artifact.metadata["num_examples"] = info.num_examples
        artifact.metadata["image_shape"] = list(info.image_shape)
        artifact.metadata["num_classes"] = info.num_classes
    for name, value in result.metrics.items():
        stats.log_metric(name, value)
