"""The notify step as a KFP component: the exit task that sends a run's outcome."""

from kfp import dsl

from tbpipe.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def notify(status: dsl.PipelineTaskFinalStatus, notify: str = "", log_root: str = "",
           experiment: str = "default", run_name: str = "",
           job_name: str = dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
           tensorboard_url: str = "http://127.0.0.1:6006") -> int:
    """Send the run's outcome to every ``notify`` target; never fails the run.

    Runs as the pipeline's ``dsl.ExitHandler`` task, whatever the other steps did: the
    message holds the run, its final state, the failed step and its error line (kept in the
    run's folder by the step; else KFP's error), and, from the run's ``_summary.json``, the
    test accuracy, the gate's decision and the TensorBoard link.

    Args:
        status: The pipeline's final status; KFP fills it in.
        notify: The targets, separated by spaces: http(s):// webhooks, mailto:ADDRESS,
            env:VAR (the URL or address is that environment variable's value).
        log_root: Where the run's logs and ``_summary.json`` are.
        experiment: The run's experiment.
        run_name: The run's name; empty: the KFP job's name.
        job_name: The KFP job's name; KFP fills it in.
        tensorboard_url: The TensorBoard address the message links to.

    Returns:
        Output: How many targets got the message.
    """
    from tbpipe.components.common.naming import resolve_run, tensorboard_run_url
    from tbpipe.components.notification.config import NotifyConfig
    from tbpipe.components.notification.core import outcome_from_summary, send_notifications

    try:
        run = resolve_run(run_name, job_name)
    except Exception:  # noqa: BLE001 - named as KFP gave it
        run = run_name or job_name
    summary, failed = None, []
    error = (status.error_message or "") if status.state != "SUCCEEDED" else ""
    if log_root:
        try:
            from tbpipe.components.common.run_summary import read_run_summary, read_step_errors

            summary = read_run_summary(log_root, experiment, run)
            if status.state != "SUCCEEDED":  # KFP names no step: the run's folder does
                failed = read_step_errors(log_root, experiment, run)
        except Exception as exc:  # noqa: BLE001 - the message goes out without it
            print(f"tbpipe: warning: notify: no run summary ({exc})")
    if failed:
        error = failed[-1]["line"]
    outcome = outcome_from_summary(
        str(status.state), f"{experiment}/{run}", summary,
        failed_step=failed[-1]["step"] if failed else "", error=error,
        tensorboard_url=tensorboard_run_url(tensorboard_url, f"{experiment}/{run}"),
        details=status.pipeline_job_resource_name or "")
    try:
        targets = NotifyConfig(notify).targets
    except Exception as exc:  # noqa: BLE001 - a bad target must not fail the run either
        print(f"tbpipe: warning: notify: {exc}")
        return 0
    return send_notifications(targets, outcome)
