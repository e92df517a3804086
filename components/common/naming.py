"""Names that end up in paths: validated, and the one log layout every step shares."""

from __future__ import annotations

import re
import time
from urllib.parse import quote, urlsplit, urlunsplit

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.storage import join

_DNS_LABEL = re.compile(r"(?=.{1,63}\Z)[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
STEPS = ("preprocess", "train", "evaluate", "finetune", "evaluate-finetuned",
         "preprocess-finetune-data")
_TRIAL = re.compile(r"trial-[0-9]{2,}")
_LOOP_ITERATION = re.compile(r"for-loop-[0-9]+-iteration-[0-9]+")  # kfp.local's loop folders


def validate_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe single path segment, else raise InputError.

    The whole value must match (``fullmatch``: a regex ``$`` also matches before a final
    newline, which let a run name ending in a newline through).

    Args:
        kind: What the name is (``experiment``, ``run``), for the message.
        value: The user-supplied name.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise InputError(
            f"{kind} name {_shown(value)} is not allowed: use 1-128 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (no '/', no '..')"
        )
    return value


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a name may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def default_run_name(now: float | None = None) -> str:
    """A timestamped run name, e.g. ``run-20261128-161230``."""
    return time.strftime("run-%Y%m%d-%H%M%S", time.localtime(now))


def trial_name(number: int) -> str:
    """The folder of a sweep's trial ``number`` (1-based): ``trial-01``, ..., ``trial-123``."""
    return f"trial-{number:02d}"


def validate_trial(trial: str) -> str:
    """Return ``trial`` if it is empty (no sweep) or a :func:`trial_name`, else InputError."""
    if trial and not _TRIAL.fullmatch(trial):
        raise InputError(f"trial {trial!r} is not a trial name: use trial-NN (trial-01, ...) "
                         "or nothing outside a sweep")
    return trial


def step_log_dir(log_root: str, experiment: str, run: str, step: str, trial: str = "") -> str:
    """``{log_root}/{experiment}/{run}/{step}``, with every segment validated.

    A sweep's trial logs one level down, ``{log_root}/{experiment}/{run}/{trial}/{step}``,
    so TensorBoard shows each trial as a run of its own under the run's folder.
    """
    for kind, value in (("experiment", experiment), ("run", run), ("step", step)):
        validate_name(kind, value)
    return join(log_root, experiment, run, *filter(None, [validate_trial(trial)]), step)


def resolve_run(run_name: str, job_name: str, output_uri: str = "") -> str:
    """The run's name: ``run_name`` if given, else the KFP job's name.

    A component called without ``job_name`` gets KFP's pipeline-job-name placeholder, which
    kfp.local and the KFP backend fill in. Where a backend leaves it unfilled, the job's
    folder in the pipeline root (``.../{job}/{task}/{output}``, from ``output_uri``) names
    the run, so every step of one job still logs under one run.
    """
    if run_name:
        return validate_name("run", run_name)
    job = job_of(job_name, output_uri)
    if job:
        return validate_name("run", job)
    raise InputError("no run name: pass run_name (or call the component inside a pipeline, "
                     "whose job name names the run)")


def job_of(job_name: str, output_uri: str) -> str:
    """The KFP job a step runs in; empty when nothing says.

    ``job_name`` once KFP filled the placeholder in, else the job's folder in the pipeline
    root (``.../{job}/{task}/{output}``, from ``output_uri``). Inside a ``dsl.ParallelFor``
    kfp.local names the job ``{job}/for-loop-2-iteration-0`` and puts the task's folder
    one level down (``.../{job}/for-loop-2-iteration-0/{task}/{output}``): the job is
    ``{job}`` all the same, so every trial of a sweep continues its run.
    """
    filled = bool(job_name) and not job_name.startswith("{{")
    parts = job_name.split("/") if filled else [
        p for p in output_uri.rstrip("/").split("/") if p][:-2]
    while len(parts) > 1 and _LOOP_ITERATION.fullmatch(parts[-1]):
        parts.pop()
    if filled:
        return "/".join(parts)
    return parts[-1] if parts and not _LOOP_ITERATION.fullmatch(parts[-1]) else ""


#: The default checkpoint root is the log root's sibling ``{log_root}{CHECKPOINT_ROOT_SUFFIX}``.
CHECKPOINT_ROOT_SUFFIX = "-checkpoints"


def checkpoint_root_for(log_root: str, checkpoint_root: str = "") -> str:
    """The checkpoint root: ``checkpoint_root`` if given, else a sibling of the log root.

    ``{log_root}-checkpoints`` (``gs://b/tb`` -> ``gs://b/tb-checkpoints``, ``/mnt/logs/tb``
    -> ``/mnt/logs/tb-checkpoints``), the same rule for local paths, gs:// and s3://, so
    TensorBoard, which walks everything under the log root, never lists checkpoint files.

    Raises:
        InputError: no ``checkpoint_root`` and the log root is a bucket or a file-system
            root, which has no sibling.

    """
    if checkpoint_root:
        return checkpoint_root
    root = log_root.rstrip("/")
    scheme, sep, rest = root.partition("://")
    if not root or (sep and "/" not in rest):
        raise InputError(f"log_root {log_root!r} is a bucket or file-system root: checkpoints "
                         "go beside the log root by default, so pass checkpoint_root "
                         "(or a log root with a folder, e.g. gs://BUCKET/tbpipe/logs)")
    return root + CHECKPOINT_ROOT_SUFFIX


def checkpoint_dir_for(log_root: str, checkpoint_root: str, experiment: str, run: str,
                       step: str, trial: str = "") -> str:
    """``{root}/{experiment}/{run}/checkpoints/{step}`` (``.../{trial}/{step}`` for a trial).

    Every segment is validated.

    ``root`` is :func:`checkpoint_root_for` ``(log_root, checkpoint_root)``.
    """
    for kind, value in (("experiment", experiment), ("run", run), ("step", step)):
        validate_name(kind, value)
    return join(checkpoint_root_for(log_root, checkpoint_root), experiment, run,
                "checkpoints", *filter(None, [validate_trial(trial)]), step)


def tensorboard_run_url(base_url: str, run_label: str) -> str:
    """Link to TensorBoard's scalars filtered to one run (``.../#scalars&regexInput=exp%2Frun``).

    Args:
        base_url: The TensorBoard address, e.g. ``http://127.0.0.1:6006``, or one under a
            path such as Kubeflow's ``https://HOST/tensorboard/NAMESPACE/NAME/`` (the path
            keeps its query, ends in ``/`` so the page's relative assets resolve, and any
            fragment gives way to the filter).
        run_label: ``{experiment}/{run}``; empty means no filter.

    """
    parts = urlsplit(base_url.strip())
    path = parts.path.rstrip("/") + "/"
    url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, "scalars"))
    return f"{url}&regexInput={quote(run_label, safe='')}" if run_label else url


def kubeflow_tensorboard_url(kubeflow_url: str, namespace: str, name: str) -> str:
    """The address Kubeflow gives a ``Tensorboard`` resource: ``URL/tensorboard/NS/NAME/``.

    Kubeflow's tensorboard-controller routes that prefix (an Istio VirtualService) to the
    TensorBoard it runs for the resource ``name`` in the profile namespace ``namespace``.

    Raises:
        InputError: the URL is not http(s)://HOST[/PATH], or a name is not a DNS label.

    """
    parts = urlsplit(kubeflow_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"--kubeflow-url {kubeflow_url!r}: use the address of Kubeflow's "
                         "dashboard, e.g. https://kubeflow.example.com")
    for kind, value in (("--namespace", namespace), ("--name", name)):
        if not _DNS_LABEL.fullmatch(value or ""):
            raise InputError(f"{kind} {value!r} is not a Kubernetes name: use up to 63 "
                             "lower-case letters, digits and '-'")
    base = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}/tensorboard/{namespace}/{name}/"
