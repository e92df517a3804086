"""The worker entry point of multi-worker training, and the step side that starts workers.

One command, the same on a laptop and in a pod::

    python -m tbpipe.components.training.worker TASK_URI

**The contract** (what a launcher, local or on a cluster, provides):

- ``TASK_URI``: a JSON task file (:class:`WorkerTask`), a local path or any store URI
  (``gs://``, ``s3://``; read through :mod:`tbpipe.components.common.storage`), the same for
  every worker: ``step`` (``train`` | ``finetune``), ``config`` (the step's
  :class:`~tbpipe.components.training.config.TrainConfig` /
  :class:`~tbpipe.components.finetuning.config.FinetuneConfig` fields, ``workers`` and
  ``checkpoint_dir`` among them), ``train_uri``, ``val_uri``, ``base_model_uri`` (finetune),
  ``model_uri``, ``log_dir``, ``result_uri`` and ``collective_timeout_s``. Every URI must be
  reachable from every worker (shared storage on a cluster).
- The worker's place, from the environment, first match wins:
  ``TF_CONFIG`` (as TFJob sets it; a ``chief`` task or, without one, ``worker`` 0 is the
  chief); else ``TBPIPE_WORKER_HOSTS`` (``host:port`` of every worker, comma-separated, in
  index order, e.g. JobSet's headless-service names) with the index from
  ``JOB_COMPLETION_INDEX`` (an Indexed Job, as JobSet runs), else ``TBPIPE_WORKER_INDEX``.
  The worker then sets ``TF_CONFIG`` itself. The number of workers must equal the task's
  ``config.workers``.
- Every worker reads the whole data set and trains on its share of each global batch
  (tf.data's ``AutoShardPolicy.DATA``). The chief alone writes the TensorBoard events
  (``log_dir``), the checkpoints (``config.checkpoint_dir``), the Model folder
  (``model_uri``) and the result (``result_uri``: :class:`TrainResult` as JSON); the others
  write theirs to a scratch folder that is removed, and resume from a copy of the chief's
  last checkpoint.
- Exit status 0: trained. 1: an error, as one line ``tbpipe: worker: error: ...`` on stderr
  (the launcher names the worker). Killed by a signal (a preempted node): restart the whole
  set; it resumes from the chief's last checkpoint with no TensorBoard step logged twice. A
  collective waiting on a dead peer fails after ``collective_timeout_s``.

:func:`run_fit_step` is the step side: one worker trains in the step's own process; more write
the task file and run the set here
(:func:`~tbpipe.components.training.distributed.run_local_workers`) or, inside a cluster
with a worker placement, through the cluster launcher
(``tbpipe.components.training.launcher.launch_workers``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping

from tbpipe.components.common.errors import InputError, SettingError, TbpipeError
from tbpipe.components.training.config import FitConfig, TrainConfig, TrainResult
from tbpipe.components.training.distributed import COLLECTIVE_TIMEOUT_S

WORKER_MODULE = "tbpipe.components.training.worker"
STEPS = ("train", "finetune")
TASK_FILE = "task.json"
RESULT_FILE = "result.json"
#: Set inside a Kubernetes pod: with a worker placement, the step launches pods.
IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
#: Where a non-chief worker makes its scratch folder (default: the temporary folder); the
#: local set points it into its own folder, removed after the set even when a worker was
#: killed before it could remove its own.
SCRATCH_ENV = "TBPIPE_WORKER_SCRATCH"


@dataclasses.dataclass(frozen=True)
class WorkerTask:
    """One fit, as every worker reads it from the task file.

    Attributes:
        step: ``train`` or ``finetune``.
        config: The step's settings (``TrainConfig`` or ``FinetuneConfig``).
        train_uri: Training Dataset folder.
        val_uri: Validation Dataset folder.
        model_uri: Where the chief writes the Model folder.
        log_dir: The step's TensorBoard folder (the chief's).
        base_model_uri: The Model folder to fine-tune (finetune only).
        result_uri: Where the chief writes :class:`TrainResult` as JSON (empty: nowhere).
        collective_timeout_s: The most one collective may take.

    """

    step: str
    config: FitConfig
    train_uri: str
    val_uri: str
    model_uri: str
    log_dir: str
    base_model_uri: str = ""
    result_uri: str = ""
    collective_timeout_s: float = COLLECTIVE_TIMEOUT_S

    def to_json(self) -> bytes:
        """The task file's content."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["config"] = dataclasses.asdict(self.config)
        return json.dumps(fields, indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> WorkerTask:
        """Read a task file's content; InputError (one line naming ``where``) if malformed."""
        try:
            fields = json.loads(data)
            step = fields["step"]
            if step not in STEPS:
                raise ValueError(f"step {step!r} is not one of {', '.join(STEPS)}")
            fields["config"] = _config_class(step)(**fields["config"])
            return cls(**fields)
        except SettingError as exc:
            raise InputError(f"{where}: {exc}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise InputError(f"{where}: not a tbpipe worker task ({exc})") from None

    def with_outputs(self, scratch: str) -> WorkerTask:
        """The task writing under ``scratch`` (a non-chief worker's copy)."""
        config = dataclasses.replace(self.config, checkpoint_dir=os.path.join(scratch, "ckpt")
                                     if self.config.checkpoint_dir else None)
        return dataclasses.replace(
            self, config=config, model_uri=os.path.join(scratch, "model"), result_uri="",
            log_dir=os.path.join(scratch, "logs", os.path.basename(self.log_dir.rstrip("/"))))


def _config_class(step: str) -> type[FitConfig]:
    if step == "finetune":
        from tbpipe.components.finetuning.config import FinetuneConfig

        return FinetuneConfig
    return TrainConfig


def fit_task(task: WorkerTask) -> TrainResult:
    """Run the task's fit in this process (with the strategy of this process)."""
    if task.step == "finetune":
        from tbpipe.components.finetuning.core import finetune_model

        return finetune_model(task.base_model_uri, task.train_uri, task.val_uri,
                              task.model_uri, task.log_dir, task.config)
    from tbpipe.components.training.core import train_model

    return train_model(task.train_uri, task.val_uri, task.model_uri, task.log_dir, task.config)


# --- the step side ------------------------------------------------------------------------


def on_cluster(placement: str) -> bool:
    """Whether the step launches its workers as pods: inside a cluster, with a placement."""
    return bool(placement) and bool(os.environ.get(IN_CLUSTER_ENV))


def run_fit_step(task: WorkerTask, placement: str = "",
                 progress: Callable[[str], None] | None = None) -> TrainResult:
    """Fit as the step's settings say: here, or over ``task.config.workers`` workers.

    With more than one worker, the task file goes to a temporary folder (or, on a cluster,
    beside the checkpoints, where the pods can read it) and the workers run this module:
    on this machine, or through the cluster launcher when :func:`on_cluster`. The chief's
    output lines reach ``progress`` (default: this process's standard output).

    Args:
        task: The fit (``result_uri`` is set here).
        placement: The pipeline's ``worker_placement`` (JSON) for the cluster launcher;
            empty: the workers run on this machine.
        progress: Gets each line of the chief's output.

    Raises:
        TbpipeError: a worker failed (one line naming it and its last log lines).

    """
    workers = task.config.workers
    if workers == 1:
        return fit_task(task)
    progress = progress or _print_line
    if on_cluster(placement):
        if not task.config.checkpoint_dir:
            raise SettingError("checkpoint_dir", None, "multi-worker training on a cluster "
                               "needs one: the task file and the result go there")
        from tbpipe.components.common.storage import join

        folder = join(task.config.checkpoint_dir, "workers")
        # the chief's pod cannot write this pod's output folder: it stages the Model folder
        # in the store, and this step copies it to its own output (KFP uploads that)
        staged = dataclasses.replace(task, model_uri=join(folder, "model"))
        result = _launch(staged, folder, placement, progress)
        _copy_folder(staged.model_uri, task.model_uri)
        return result
    folder = tempfile.mkdtemp(prefix="tbpipe-workers-")
    try:
        scratch = os.path.join(folder, "scratch")
        os.mkdir(scratch)
        # every temporary file of a worker (its checkpoint staging too) lives in the set's
        # folder, so a worker killed mid-save leaves nothing behind once the set ends
        return _launch(task, folder, "", progress, {SCRATCH_ENV: scratch, "TMPDIR": scratch})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _launch(task: WorkerTask, folder: str, placement: str, progress: Callable[[str], None],
            env: Mapping[str, str] | None = None) -> TrainResult:
    from tbpipe.components.common.storage import delete_file, exists, join, read_bytes, write_bytes
    from tbpipe.components.training.distributed import run_local_workers

    task = dataclasses.replace(task, result_uri=join(folder, RESULT_FILE))
    if exists(task.result_uri):  # a retried step: a result of an earlier attempt is not this one's
        delete_file(task.result_uri)
    task_uri = join(folder, TASK_FILE)
    write_bytes(task_uri, task.to_json())
    command = [sys.executable, "-m", WORKER_MODULE, task_uri]
    workers = task.config.workers
    if placement:
        from tbpipe.components.training.launcher import launch_workers

        launch_workers(command, dict(env or {}), workers, placement, task.step, progress)
    else:
        run_local_workers(command, dict(env or {}), workers, progress)
    if not exists(task.result_uri):
        raise TbpipeError(f"{task.step}: the {workers} workers ended without the chief's "
                          f"result ({task.result_uri})")
    return TrainResult(**json.loads(read_bytes(task.result_uri)))


def _copy_folder(uri: str, local_dir: str) -> None:
    """Copy every file under ``uri`` into ``local_dir`` (each file whole, by its storage)."""
    from tbpipe.components.common.storage import download_file, join, list_files

    for relative in list_files(uri):
        target = os.path.join(local_dir, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        download_file(join(uri, relative), target)


def _print_line(line: str) -> None:
    print(line, flush=True)


# --- the worker process -------------------------------------------------------------------


def run_worker(task_uri: str, environ: Mapping[str, str]) -> TrainResult:
    """Be one worker of the set ``environ`` describes, fitting the task at ``task_uri``.

    Creates the multi-worker strategy first (before any other TensorFlow op); the chief
    fits with the task's outputs, the others with a scratch folder's, removed afterwards.
    """
    from tbpipe.components.common.storage import read_bytes, write_bytes
    from tbpipe.components.training.distributed import start_multi_worker, worker_cluster

    cluster = worker_cluster(environ)
    task = WorkerTask.from_json(read_bytes(task_uri), task_uri)
    if cluster.num_workers != task.config.workers:
        raise InputError(f"{task_uri}: the task is for {task.config.workers} workers, the "
                         f"cluster has {cluster.num_workers} (TF_CONFIG / "
                         "TBPIPE_WORKER_HOSTS); start as many workers as the task says")
    os.environ["TF_CONFIG"] = cluster.tf_config()
    start_multi_worker(task.collective_timeout_s)
    if cluster.is_chief:
        result = fit_task(task)
        if task.result_uri:
            write_bytes(task.result_uri, json.dumps(dataclasses.asdict(result)).encode())
        return result
    from tbpipe.components.training.checkpoint import copy_checkpoint

    with tempfile.TemporaryDirectory(prefix=f"tbpipe-worker-{cluster.rank}-",
                                     dir=environ.get(SCRATCH_ENV) or None) as scratch:
        own = task.with_outputs(scratch)
        if task.config.checkpoint_dir:
            copy_checkpoint(task.config.checkpoint_dir, own.config.checkpoint_dir)
        return fit_task(own)


def main(argv: list[str] | None = None) -> int:
    """``python -m tbpipe.components.training.worker TASK_URI``: one worker of a set."""
    from tbpipe.components.common.errors import exit_on_error

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {WORKER_MODULE} TASK_URI", file=sys.stderr)
        return 2
    with exit_on_error("worker"):
        run_worker(args[0], os.environ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
