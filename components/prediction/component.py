"""The batch-predict step as a KFP component: translation between artifacts and the logic only."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def batch_predict(
    model_uri: str,
    images_uri: str,
    predictions: Output[Dataset],
    metrics: Output[Metrics],
    log_root: str,
    top_k: int = 3,
    batch_size: int = 256,
    output_format: str = "parquet",
    path_column: str = "path",
    read_threads: int = 4,
    experiment: str = "default",
    run_name: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
) -> NamedTuple("BatchPredictOutputs", [("images", int), ("failed", int)]):
    """Predict the top classes of many images, streamed in fixed-size batches.

    Logs go to {log_root}/{experiment}/{run}/batch-predict. Defaults: BatchPredictConfig's
    (a test holds them equal).

    Args:
        model_uri: A Model folder (e.g. select-model's ``best_model``) or a registry
            (``--promote-to``: the version its champion names); local or any store.
        images_uri: A folder of images, a CSV or Parquet list of image paths/URIs (column
            ``path_column``), or one image; local or any store.
        log_root: The TensorBoard root; logs go to {log_root}/{experiment}/{run}/batch-predict.
        top_k: Classes per image, most probable first.
        batch_size: Images read and predicted at once (bounds the memory).
        output_format: ``parquet`` or ``csv``.
        path_column: The column of image paths in a CSV/Parquet list.
        read_threads: Threads reading and decoding images.
        experiment: The experiment folder under ``log_root``.
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (KFP fills it in).

    Returns:
        predictions: The table written: path, class_1, probability_1, ..., error.
        metrics: images, failed, images_per_s.
        images: How many images were predicted.
        failed: How many could not be read.
    """
    from collections import namedtuple

    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.prediction.config import BatchPredictConfig
    from tbpipe.components.prediction.core import STEP, batch_predict_images

    with step_run(STEP, metrics.uri, log_root, experiment, run_name, job_name) as here:
        config = BatchPredictConfig(top_k=top_k, batch_size=batch_size,
                                    output_format=output_format, path_column=path_column,
                                    read_threads=read_threads, run_label=here.label)
        result = batch_predict_images(model_uri, images_uri, predictions.path, here.log_dir,
                                      config)
    predictions.metadata.update({"format": output_format, "model_uri": result.model_uri,
                                 "images": result.images})
    metrics.log_metric("images", result.images)
    metrics.log_metric("failed", result.failed)
    metrics.log_metric("images_per_s", result.images_per_s)
    report_result(STEP, result.line())
    outputs = namedtuple("BatchPredictOutputs", ["images", "failed"])
    return outputs(result.images, result.failed)
