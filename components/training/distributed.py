"""Multi-worker training: which worker this is, its strategy, its throughput, a local set.

The contract a worker process follows (how it learns its cluster from the environment) is
written in :mod:`tbpipe.components.training.worker`, the entry point; this module implements
it (:func:`worker_cluster`) and holds what the fit loop needs of it:

- :func:`start_multi_worker` creates the one ``MultiWorkerMirroredStrategy`` of a worker
  process, before any other TensorFlow op (collectives are configured at start-up), with a
  timeout on every collective so a dead peer ends in an error rather than a hang;
  :func:`multi_worker_strategy` returns it to the fit loop.
- :func:`worker_throughput_callback` measures each worker's samples/s per epoch and gathers
  them (one small all-reduce) so the chief logs them.
- :func:`run_local_workers` starts N worker processes on this machine with ``TF_CONFIG`` on
  free loopback ports (real multi-worker TensorFlow over gRPC), streams the chief's output,
  restarts the set when a worker is killed (as a node's preemption would), fails with one
  line naming the worker and its last log lines otherwise, and never waits on a set whose
  worker has ended badly.

TensorFlow is imported inside the functions that use it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from tbpipe.components.common.errors import InputError, TbpipeError

#: ``host:port`` of every worker, comma-separated, in index order (JobSet: headless-service
#: DNS names), when ``TF_CONFIG`` is not set.
WORKER_HOSTS_ENV = "TBPIPE_WORKER_HOSTS"
#: This worker's index, set by an Indexed Job (JobSet's jobs are Indexed Jobs).
JOB_INDEX_ENV = "JOB_COMPLETION_INDEX"
#: This worker's index where no Indexed Job sets one.
WORKER_INDEX_ENV = "TBPIPE_WORKER_INDEX"
#: The most a collective (an all-reduce) may take before TensorFlow aborts it: a peer that
#: died leaves the others waiting in one, and a first step waits for the slowest worker's
#: start-up (imports, data) as well.
COLLECTIVE_TIMEOUT_S = 600.0
#: How often a local set restarts after a worker was killed by a signal (a preempted node).
LOCAL_RESTARTS = 2
#: How long the other workers may run on once one worker has finished cleanly.
FINISH_GRACE_S = 120.0
#: Between SIGTERM and SIGKILL when a local set is stopped.
KILL_GRACE_S = 5.0
TAIL_LINES = 8
_POLL_S = 0.2


@dataclasses.dataclass(frozen=True)
class WorkerCluster:
    """The cluster a worker process belongs to: every task's address and this one's place.

    Attributes:
        cluster: ``TF_CONFIG``'s ``cluster``: task type -> ``host:port`` list.
        task_type: This task's type (``worker``, or ``chief`` as a TFJob may name one).
        index: This task's index within its type.

    """

    cluster: Mapping[str, Sequence[str]]
    task_type: str
    index: int

    @property
    def num_workers(self) -> int:
        """Processes training together (chief included)."""
        return sum(len(self.cluster.get(kind, ())) for kind in ("chief", "worker"))

    @property
    def is_chief(self) -> bool:
        """The one writer: the ``chief`` task, else worker 0 when the cluster has no chief."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.index == 0 and not self.cluster.get("chief")

    @property
    def rank(self) -> int:
        """The worker's place among all of them (the chief first)."""
        chiefs = len(self.cluster.get("chief", ()))
        return self.index if self.task_type == "chief" else chiefs + self.index

    def tf_config(self) -> str:
        """The cluster and task as a ``TF_CONFIG`` value."""
        return json.dumps({"cluster": {k: list(v) for k, v in self.cluster.items()},
                           "task": {"type": self.task_type, "index": self.index}})


def tf_config_for(hosts: Sequence[str], index: int) -> str:
    """``TF_CONFIG`` of worker ``index`` of a cluster of ``hosts`` (``host:port``), no chief."""
    return WorkerCluster({"worker": list(hosts)}, "worker", index).tf_config()


def worker_cluster(environ: Mapping[str, str]) -> WorkerCluster:
    """The worker's cluster: ``TF_CONFIG`` when set, else the hosts list and an index.

    Raises:
        InputError: neither is set, or what is set is malformed (one line naming the variable).

    """
    raw = environ.get("TF_CONFIG", "").strip()
    if raw:
        return _parse_tf_config(raw)
    hosts = [h.strip() for h in environ.get(WORKER_HOSTS_ENV, "").split(",") if h.strip()]
    if not hosts:
        raise InputError(f"a tbpipe worker needs TF_CONFIG or {WORKER_HOSTS_ENV} (host:port "
                         "of every worker, comma-separated); the train step sets them")
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not (name and port.isdigit()):
            raise InputError(f"{WORKER_HOSTS_ENV}: {host!r} is not host:port")
    name = JOB_INDEX_ENV if environ.get(JOB_INDEX_ENV, "").strip() else WORKER_INDEX_ENV
    text = environ.get(name, "").strip()
    if not text.isdigit() or int(text) >= len(hosts):
        raise InputError(f"{name}={text!r}: must be a worker index from 0 to {len(hosts) - 1} "
                         f"({len(hosts)} hosts in {WORKER_HOSTS_ENV}); set {JOB_INDEX_ENV} "
                         f"(Indexed Job) or {WORKER_INDEX_ENV}")
    return WorkerCluster({"worker": hosts}, "worker", int(text))


def _parse_tf_config(raw: str) -> WorkerCluster:
    try:
        value = json.loads(raw)
        cluster, task = value["cluster"], value["task"]
        kind, index = str(task["type"]), int(task["index"])
        tasks = {str(k): [str(h) for h in v] for k, v in dict(cluster).items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InputError(f"TF_CONFIG: not a cluster and task ({exc!r}); expected "
                         '{"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": 0}}') from None
    if kind not in ("chief", "worker") or not 0 <= index < len(tasks.get(kind, ())):
        raise InputError(f"TF_CONFIG: task {kind} {index} is not a chief or worker of its "
                         f"cluster ({', '.join(f'{k}: {len(v)}' for k, v in tasks.items())})")
    return WorkerCluster(tasks, kind, index)


# --- the strategy of a worker process ----------------------------------------------------

_strategy: list[Any] = []  # the one MultiWorkerMirroredStrategy of this process, once made


def start_multi_worker(timeout_s: float = COLLECTIVE_TIMEOUT_S) -> Any:  # noqa: ANN401
    """Create this process's MultiWorkerMirroredStrategy from ``TF_CONFIG`` (once).

    Call it before any other TensorFlow op. Every collective gets ``timeout_s``: a worker
    waiting on a dead peer fails instead of hanging.
    """
    if not _strategy:
        import tensorflow as tf

        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
        _strategy.append(_keras_multi_worker_class()(communication_options=options))
    return _strategy[0]


def multi_worker_strategy(workers: int) -> Any:  # noqa: ANN401
    """The strategy :func:`start_multi_worker` made in this worker process.

    Raises:
        TbpipeError: none was started: ``workers`` > 1 outside a worker process.

    """
    if not _strategy:
        raise TbpipeError(f"workers={workers}: multi-worker training runs in worker processes "
                          "(python -m tbpipe.components.training.worker TASK_URI), which the "
                          "train and finetune steps start")
    return _strategy[0]


def _keras_multi_worker_class() -> type:
    """MultiWorkerMirroredStrategy whose ``reduce`` takes what Keras 3's trainer passes it.

    Keras 3 (checked with 3.15) calls ``strategy.reduce`` with a nested batch (when it builds
    the model's metrics) and with ``axis=0`` on scalar metrics (``reduce_per_replica``);
    MultiWorkerMirroredStrategy, which hands both to its cross-worker collectives, refuses
    them. This reduces each element of a nested value, and a scalar over the replicas
    (``axis=None``): what those calls mean. Public API only (an override).
    """
    import tensorflow as tf

    class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """MultiWorkerMirroredStrategy reducing nested values and scalars as Keras asks."""

        def reduce(self, reduce_op, value, axis):  # noqa: ANN001, ANN201, D102
            if not isinstance(value, tf.distribute.DistributedValues) and tf.nest.is_nested(
                    value):
                return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
            if axis is not None and all(
                    getattr(t, "shape", None) is not None and t.shape.rank == 0
                    for t in self.experimental_local_results(value)):
                axis = None
            return super().reduce(reduce_op, value, axis)

    return KerasMultiWorkerStrategy


# --- per-worker throughput ---------------------------------------------------------------


def worker_throughput_callback(strategy: Any, writer: Any, cluster: WorkerCluster,  # noqa: ANN401
                               samples_per_epoch: int, steps_per_epoch: int,
                               initial_step: int):  # noqa: ANN201 - a keras Callback
    """A Keras callback logging every worker's training samples/s per epoch (the chief's file).

    Each worker times its epoch's training batches (validation excluded) and counts its share
    of the epoch's samples (its replicas' part of the global batch); one all-reduce per epoch
    (every worker runs it) gives all of them to everyone. Scalars, at the epoch's last batch:
    ``workers/samples_per_sec/worker-N`` and their sum ``workers/samples_per_sec``.
    Non-chief workers log to their scratch writer, removed with it.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    workers = cluster.num_workers
    local = max(1, len(strategy.extended.worker_devices))
    share = samples_per_epoch * local / max(1, int(strategy.num_replicas_in_sync))

    class WorkerThroughput(keras.callbacks.Callback):
        """Times the training part of each epoch; gathers and logs every worker's rate."""

        def __init__(self) -> None:
            super().__init__()
            self._step, self._start, self._train_s = initial_step, 0.0, None

        def on_epoch_begin(self, epoch: int, logs=None) -> None:  # noqa: ANN001, D102
            self._start, self._train_s = time.perf_counter(), None

        def on_test_begin(self, logs=None) -> None:  # noqa: ANN001, D102
            if self._train_s is None:
                self._train_s = time.perf_counter() - self._start

        def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: ANN001, D102
            seconds = self._train_s or (time.perf_counter() - self._start)
            self._step += steps_per_epoch
            mine = np.zeros(workers, np.float32)
            mine[cluster.rank] = share / max(seconds, 1e-9) / local  # summed over local replicas
            value = strategy.experimental_distribute_values_from_function(
                lambda _ctx: tf.constant(mine))
            rates = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None).numpy()
            for rank, rate in enumerate(rates):
                writer.add_scalar(f"workers/samples_per_sec/worker-{rank}", float(rate),
                                  self._step)
            writer.add_scalar("workers/samples_per_sec", float(rates.sum()), self._step)

    return WorkerThroughput()


# --- a set of worker processes on this machine ---------------------------------------------


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 now (held together while chosen)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclasses.dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    tail: collections.deque
    reader: threading.Thread


def run_local_workers(command: Sequence[str], env: Mapping[str, str], workers: int,
                      progress: Callable[[str], None], restarts: int = LOCAL_RESTARTS,
                      finish_grace_s: float = FINISH_GRACE_S) -> None:
    """Run ``command`` as ``workers`` processes here, one ``TF_CONFIG`` each, until all end.

    Worker 0 is the chief: its output lines go to ``progress``; every worker's last lines
    are kept for an error. A worker killed by a signal (a preempted node; SIGKILL, the OOM
    killer) stops the set and starts it again, up to ``restarts`` times, on new ports; the
    chief resumes from its last checkpoint. A worker that exits with an error stops the set.

    Raises:
        TbpipeError: one line naming the worker, how it ended and its last lines; or the set
            did not finish within ``finish_grace_s`` of a worker's clean exit.

    """
    for attempt in range(restarts + 1):
        failed = _run_set(command, env, workers, progress, finish_grace_s)
        if failed is None:
            return
        worker, code = failed
        last = " | ".join(line.strip() for line in worker.tail if line.strip()) or "no output"
        how = (f"was killed by {_signal_name(-code)}" if code < 0 else
               f"exited with status {code}" if code > 0 else
               f"finished, but the set was still running {finish_grace_s:.0f} s later")
        if code < 0 and attempt < restarts:
            progress(f"worker {worker.index} of {workers} {how}; restarting the set from the "
                     f"chief's last checkpoint ({attempt + 1} of {restarts} restarts)")
            continue
        raise TbpipeError(f"worker {worker.index} of {workers} {how}; its last lines: {last}")


def _run_set(command: Sequence[str], env: Mapping[str, str], workers: int,
             progress: Callable[[str], None],
             finish_grace_s: float) -> tuple[_Worker, int] | None:
    """Run one set to its end: None when every worker exited 0, else the one that did not."""
    hosts = [f"127.0.0.1:{port}" for port in free_loopback_ports(workers)]
    with _worker_set(command, env, hosts, progress) as (started, stopped):
        finished_at = None
        while not stopped.is_set():
            codes = [w.process.poll() for w in started]
            # A killed worker first: its peers' errors (a collective lost) follow from it.
            ended = sorted((c > 0, w.index) for w, c in zip(started, codes, strict=True)
                           if c not in (None, 0))
            if ended:
                bad = started[ended[0][1]]
                return bad, bad.process.returncode
            if all(c == 0 for c in codes):
                for w in started:
                    w.reader.join()
                return None
            if finished_at is None and 0 in codes:
                finished_at = time.monotonic()
            if finished_at is not None and time.monotonic() - finished_at > finish_grace_s:
                return started[codes.index(0)], 0
            time.sleep(_POLL_S)
    raise TbpipeError("the step was stopped (SIGTERM) and stopped its workers; a retry "
                      "resumes from the chief's last checkpoint")


@contextlib.contextmanager
def _worker_set(command: Sequence[str], env: Mapping[str, str], hosts: list[str],
                progress: Callable[[str], None]
                ) -> Iterator[tuple[list[_Worker], threading.Event]]:
    """Start one process per host and yield them with an event SIGTERM sets.

    On the way out, every worker still running is stopped (SIGTERM, then SIGKILL).
    """
    from tbpipe.components.common.sigterm import on_sigterm

    started: list[_Worker] = []
    stopped = threading.Event()
    try:
        with on_sigterm(stopped.set):
            for index in range(len(hosts)):
                variables = {**os.environ, "PYTHONUNBUFFERED": "1", **env,
                             "TF_CONFIG": tf_config_for(hosts, index)}
                variables.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
                process = subprocess.Popen(list(command), env=variables, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True, errors="replace", bufsize=1)
                tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
                reader = threading.Thread(target=_relay, daemon=True, args=(
                    process, tail, progress if index == 0 else None))
                reader.start()
                started.append(_Worker(index, process, tail, reader))
            yield started, stopped
    finally:
        _stop_all(started)
        for worker in started:
            worker.reader.join(timeout=5)


def _relay(process: subprocess.Popen, tail: collections.deque,
           progress: Callable[[str], None] | None) -> None:
    for line in process.stdout:
        tail.append(line.rstrip("\n"))
        if progress is not None:
            progress(line.rstrip("\n"))


def _stop_all(started: Sequence[_Worker]) -> None:
    running = [w.process for w in started if w.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    deadline = time.monotonic() + KILL_GRACE_S
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
