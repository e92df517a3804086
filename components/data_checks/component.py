"""The check-data step as a KFP component: translation between artifacts and the logic only."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Output

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_data(
    train_data: Input[Dataset],
    val_data: Input[Dataset],
    test_data: Input[Dataset],
    stats: Input[Metrics],
    metrics: Output[Metrics],
    report: Output[Markdown],
    html_report: Output[HTML],
    log_root: str,
    experiment: str = "default",
    run_name: str = "",
    job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    data_checks: str = "warn",
    promote_to: str = "",
    seed: int = 42,
    tensorboard_url: str = "http://127.0.0.1:6006",
    resume: bool = False,
) -> NamedTuple("CheckDataOutputs", [("drift_p_value", float), ("drifted", bool)]):
    """Check the preprocessed data before training; logs go to {log_root}/{exp}/{run}/check-data.

    Copies between the train and test splits (exact, and near by perceptual hash), empty and
    undecodable images, class balance, image size and channel statistics; with a champion in
    ``promote_to``: its label set, class shift, copies of its test set and drift (MMD on its
    penultimate-layer embeddings). Defaults: DataChecksConfig's (a test holds them equal).

    Args:
        train_data: The training examples (preprocess's ``train_data``).
        val_data: The validation examples (preprocess's ``val_data``).
        test_data: The test examples (preprocess's ``test_data``).
        stats: preprocess's ``stats`` (files it could not decode).
        log_root: Where every step's TensorBoard logs go; this step's are
            ``{log_root}/{experiment}/{run}/check-data``.
        experiment: The experiment the run belongs to (a folder under ``log_root``).
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name (the run's owner); KFP fills it in.
        data_checks: ``warn`` (log violations), ``strict`` (fail on any) or ``off``.
        promote_to: The registry whose champion the data is compared with; empty: none.
        seed: Seeds the drift test's samples and permutations.
        tensorboard_url: The TensorBoard address the reports link to.
        resume: Continue a run of this name that another KFP job claimed.

    Returns:
        metrics: Violations, exact and near copies, copies of the champion's test set, empty
            images, the drift's MMD^2, p-value and whether it is significant (0/1).
        report: The Markdown report.
        html_report: The same report as an HTML page.
        drift_p_value: The drift test's p-value; 1.0 without a champion.
        drifted: Whether the drift is significant.
    """
    from collections import namedtuple

    from tbpipe.components.common.progress import report_result
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.data_checks.config import DataChecksConfig
    from tbpipe.components.data_checks.core import champion_of, check_datasets

    with step_run("check-data", metrics.uri, log_root, experiment, run_name, job_name,
                  resume) as here:
        config = DataChecksConfig(mode=data_checks, seed=seed, tensorboard_url=tensorboard_url,
                                  run_label=here.label)
        here.claim()
        champion = champion_of(promote_to) if data_checks != "off" else ""
        result = check_datasets(train_data.path, val_data.path, test_data.path, report.path,
                                html_report.path, here.log_dir, config, champion,
                                dict(stats.metadata))
    for name, value in result.metrics().items():
        metrics.log_metric(name, value)
    report_result("check-data", result.line())
    outputs = namedtuple("CheckDataOutputs", ["drift_p_value", "drifted"])
    return outputs(result.drift_p_value, result.drifted)
