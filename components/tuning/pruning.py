"""Early stopping of a trial from its own event files, decided by an Optuna pruner.

After each epoch the train step of a trial (``TrainConfig.tune_study`` set) reads the
pruning metric back from the event files it has just written (``epoch/val_accuracy`` by
default: whatever the trial logged, so a user's model is watched the same way), records
the curve in its trial file, and asks the pruner (:data:`~tbpipe.components.training.config.
PRUNERS`) whether to stop, given every other trial's curve from the study folder
(``pruner.prune(study, trial)`` on a study rebuilt from the records). A pruned trial stops
training cleanly at the end of that epoch; its model is saved and it ends ``pruned``.

The pruners (:func:`make_pruner`): ``median`` is Optuna's MedianPruner (stop a trial whose
value at an epoch is worse than the median of the finished trials' values at that epoch)
once :data:`MEDIAN_STARTUP_TRIALS` trials have finished, never before half the trial's
epochs (and never before epoch :data:`MEDIAN_WARMUP_EPOCHS`): pruning from epoch 2 of 10
stopped most trials too early to rank them and missed the grid's best on one seed of three
(docs/performance.md section 12);
``hyperband`` is Optuna's HyperbandPruner from 1 epoch to the trial's epochs (reduction
factor 3); ``none`` records the curve and never stops a trial.

:class:`TrialReporter` is the logic (no Keras); :func:`keras_callback` wraps it as the
callback the fit runs. Optuna, Keras and the protobufs are imported inside functions.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Mapping
from typing import Any

from tbpipe.components.common import storage
from tbpipe.components.common.errors import SettingError
from tbpipe.components.training.config import PRUNERS
from tbpipe.components.tuning.objectives import (
    OBJECTIVES,
    Objective,
    pruning_objective,
)
from tbpipe.components.tuning.record import TrialRecord
from tbpipe.components.tuning.space import SearchSpace
from tbpipe.components.tuning.study import (
    read_deadline,
    read_study,
    read_trial,
    read_trials,
    rebuild_study,
    study_objectives,
    trial_uri,
    write_trial,
)

#: MedianPruner: finished trials needed before it prunes; the first epoch it may prune at is
#: half the trial's epochs, at least this.
MEDIAN_STARTUP_TRIALS = 3
MEDIAN_WARMUP_EPOCHS = 2
HYPERBAND_REDUCTION = 3
#: The metric recorded when the first objective is not a per-epoch one (``params:min``).
DEFAULT_METRIC = Objective("val_accuracy", OBJECTIVES["val_accuracy"])
#: Examples per batch when latency is measured.
LATENCY_BATCH = 32
_LENGTH = struct.Struct("<Q")


def make_pruner(name: str, max_epochs: int) -> Any:  # noqa: ANN401 - an optuna pruner
    """Optuna's pruner called ``name`` (one of PRUNERS) for trials of ``max_epochs`` epochs."""
    import optuna

    if name == "median":
        warmup = max(MEDIAN_WARMUP_EPOCHS, (max_epochs + 1) // 2)
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS,
                                           n_warmup_steps=warmup)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(max_epochs, 1),
                                              reduction_factor=HYPERBAND_REDUCTION)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SettingError("--pruner", name, f"must be one of {', '.join(PRUNERS)}")


def should_prune(records: list[TrialRecord], current: TrialRecord, space: SearchSpace,
                 metric: Objective, pruner: Any) -> tuple[bool, dict]:  # noqa: ANN401
    """Whether ``pruner`` stops ``current`` (running, with its curve so far).

    The other trials enter a single-objective study of ``metric`` (their final value of it);
    ``current`` enters running, with its curve and the pruner's earlier bookkeeping.

    Returns:
        ``(prune, system_attrs)``: the decision and the pruner's bookkeeping to keep.

    """
    if not current.intermediate:
        return False, dict(current.system_attrs)
    others = [r for r in records if r.number != current.number]
    ordered = sorted([*others, current], key=lambda r: r.number)
    study = rebuild_study(ordered, space, (metric,), pruner=pruner)
    trial = next((t for t in study.get_trials(deepcopy=False)
                  if t.user_attrs.get("tbpipe_number") == current.number), None)
    if trial is None:  # its parameters are outside the study's space: nothing to compare
        return False, dict(current.system_attrs)
    prune = bool(pruner.prune(study, trial))
    after = next(t for t in study.get_trials(deepcopy=False)
                 if t.user_attrs.get("tbpipe_number") == current.number)
    return prune, dict(after.system_attrs)


class EventCurve:
    """The per-epoch values of one tag, read from the event files of a local folder as they grow.

    Each read goes on from where the last one stopped in each file (whole records only), so
    watching a fit costs the bytes it wrote since, not the whole file again. The epochs are
    the tag's distinct steps in order (tbpipe logs epoch tags at the epoch's last global
    batch), so the curve is ``{1: first epoch's value, 2: ...}``.
    """

    def __init__(self, folder: str, tag: str) -> None:
        self.folder, self.tag = folder, tag
        self._offsets: dict[str, int] = {}
        self._points: dict[int, float] = {}  # step -> value (a later event wins: a resume)

    def read(self) -> dict[int, float]:
        """The curve so far, epoch (1-based) to value."""
        for name in sorted(os.listdir(self.folder)) if os.path.isdir(self.folder) else []:
            if "tfevents" in name:
                self._read_file(os.path.join(self.folder, name))
        return {epoch: self._points[step]
                for epoch, step in enumerate(sorted(self._points), start=1)}

    def _read_file(self, path: str) -> None:
        offset = self._offsets.get(path, 0)
        with open(path, "rb") as handle:
            handle.seek(offset)
            while len(header := handle.read(12)) == 12:
                length = _LENGTH.unpack_from(header)[0]
                data = handle.read(length)
                if len(data) < length or len(handle.read(4)) < 4:
                    break  # a record being written: read it next time
                offset += 12 + length + 4
                self._take(data)
        self._offsets[path] = offset

    def _take(self, data: bytes) -> None:
        point = scalar_point(data, self.tag)
        if point is not None:
            self._points[point[0]] = point[1]


def scalar_point(record: bytes, tag: str) -> tuple[int, float] | None:
    """``(step, value)`` of ``tag`` in one serialized ``Event``, if it holds it."""
    from tensorboardX.proto.event_pb2 import Event

    event = Event.FromString(record)
    for value in event.summary.value:
        if value.tag != tag:
            continue
        if value.HasField("simple_value"):
            return int(event.step), float(value.simple_value)
        if value.HasField("tensor") and value.tensor.float_val:
            return int(event.step), float(value.tensor.float_val[0])
        if value.HasField("tensor") and value.tensor.double_val:
            return int(event.step), float(value.tensor.double_val[0])
    return None


def read_curve(log_dir: str, tag: str = "epoch/val_accuracy") -> dict[int, float]:
    """The per-epoch values of ``tag`` in the event files under ``log_dir`` (any store)."""
    points = read_points(log_dir, tag)
    return {epoch: points[step] for epoch, step in enumerate(sorted(points), start=1)}


def read_points(log_dir: str, tag: str) -> dict[int, float]:
    """Step to value of ``tag`` in the event files under ``log_dir`` (any store).

    A later event at the same step wins (the files in name order, as TensorBoard reads them).
    """
    points: dict[int, float] = {}
    for name in storage.list_files(log_dir) if storage.exists(log_dir) else []:
        if "tfevents" not in name:
            continue
        buf = storage.read_bytes(storage.join(log_dir, name))
        pos = 0
        while pos + 12 <= len(buf):
            end = pos + 12 + _LENGTH.unpack_from(buf, pos)[0]
            if end + 4 > len(buf):
                break
            point = scalar_point(buf[pos + 12:end], tag)
            if point is not None:
                points[point[0]] = point[1]
            pos = end + 4
    return points


class TrialReporter:
    """A trial's train step reporting to its study: curve, pruning, end state.

    Args:
        study_uri: The study folder (``TrainConfig.tune_study``).
        number: The trial's number (``TrainConfig.tune_trial``); its record must exist
            (written when the trial was suggested).
        pruner: One of PRUNERS.
        max_epochs: The trial's epochs (Hyperband's largest budget).
        log_dir: The trial's TensorBoard folder (recorded).
        model_uri: The trial's Model folder (recorded).

    Raises:
        SettingError: the study has no trial ``number`` (one line naming ``tune_trial``).

    """

    def __init__(self, study_uri: str, number: int, pruner: str, max_epochs: int,
                 log_dir: str = "", model_uri: str = "") -> None:
        study = read_study(study_uri)
        if study is None or not storage.exists(trial_uri(study_uri, number)):
            raise SettingError("tune_trial", number, f"no such trial in the study at "
                               f"{study_uri}; suggest it first (suggest_trials)")
        self.study_uri, self.number, self.max_epochs = study_uri, number, max_epochs
        self.space = SearchSpace.parse(study["space"])
        self.objectives = study_objectives(study_uri)
        self.metric = pruning_objective(self.objectives) or DEFAULT_METRIC
        self.pruner_name = pruner
        self.pruner = make_pruner(pruner, max_epochs)
        self.record = read_trial(study_uri, number).replace(
            state="running", log_dir=log_dir, model_uri=model_uri, error="")
        self.curve: EventCurve | None = None
        self.pruned = False
        self.measured: dict[str, float] = {}
        self.deadline = read_deadline(study_uri)  # --tune-timeout: the whole search's end
        self._started = time.monotonic()
        write_trial(study_uri, self.record)

    @property
    def wants_latency(self) -> bool:
        """Whether an objective is ``latency`` (measured once training ends)."""
        return any(objective.name == "latency" for objective in self.objectives)

    def watch(self, event_dir: str) -> None:
        """Read the curve from the event files of the local folder ``event_dir``."""
        self.curve = EventCurve(event_dir, f"epoch/{self.metric.name}")

    def epoch_end(self) -> bool:
        """Record the curve so far; whether the pruner stops the trial now."""
        curve = self.curve.read() if self.curve is not None else {}
        self.record = self.record.replace(intermediate=curve, epochs_run=len(curve),
                                          duration_s=self._elapsed())
        if curve and self.pruner_name != "none":
            records = read_trials(self.study_uri)
            prune, attrs = should_prune(records, self.record, self.space, self.metric,
                                        self.pruner)
            self.record = self.record.replace(system_attrs=attrs)
            self.pruned = prune
        if not self.pruned and self.deadline is not None and time.time() >= self.deadline:
            # the search's time is up: stopped like a pruned trial, its model kept
            self.pruned = True
            self.record = self.record.replace(
                system_attrs={**self.record.system_attrs, "stopped_by": "--tune-timeout"})
        write_trial(self.study_uri, self.record)
        return self.pruned

    def note_model(self, measured: Mapping[str, float]) -> None:
        """Keep what was measured on the trained model (``params``, ``latency``)."""
        self.measured.update(measured)

    def finish(self, metrics: Mapping[str, float], epochs_run: int | None = None) -> TrialRecord:
        """Record the trial ``complete`` (or ``pruned``) with its last epoch's ``metrics``."""
        values = {**{k: float(v) for k, v in metrics.items()}, **self.measured}
        self.record = self.record.replace(
            state="pruned" if self.pruned else "complete", values=values,
            epochs_run=epochs_run if epochs_run is not None else self.record.epochs_run,
            duration_s=self._elapsed())
        write_trial(self.study_uri, self.record)
        return self.record

    def fail(self, error: str) -> TrialRecord:
        """Record the trial ``failed`` with its one error line."""
        self.record = self.record.replace(state="failed", error=error,
                                          duration_s=self._elapsed())
        write_trial(self.study_uri, self.record)
        return self.record

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._started, 3)


def keras_callback(reporter: TrialReporter, event_dir: str,
                   sync: Callable[[], object] = lambda: None,
                   hparams: dict | None = None) -> Any:  # noqa: ANN401
    """The Keras callback that runs ``reporter`` in a fit.

    Args:
        reporter: The trial's reporter.
        event_dir: The local folder the fit's writer writes its event files to.
        sync: Writes every event logged so far to the event file (the writer's sync), called
            before each read.
        hparams: The HParams the fit logs once training ends: ``tune_state`` (``complete``
            or ``pruned``) is set in it then.

    """
    import keras

    reporter.watch(event_dir)

    class ReportTrial(keras.callbacks.Callback):
        """After each epoch: the trial's curve to its study, and stop when pruned."""

        def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: ANN001, D102
            sync()
            if reporter.epoch_end():
                print(f"trial {reporter.number} pruned after epoch {epoch + 1} "
                      f"({reporter.metric.name} "
                      f"{reporter.record.intermediate.get(epoch + 1, float('nan')):.4f})",
                      flush=True)
                self.model.stop_training = True

        def on_train_end(self, logs=None) -> None:  # noqa: ANN001, D102
            measured = {"params": float(self.model.count_params())}
            if reporter.wants_latency:
                measured["latency"] = model_latency(self.model)
            reporter.note_model(measured)
            if hparams is not None:
                hparams["tune_state"] = "pruned" if reporter.pruned else "complete"

    return ReportTrial()


def model_latency(model: Any, repeats: int = 5) -> float:  # noqa: ANN401 - a keras.Model
    """Seconds per example of ``model.predict_on_batch`` on a batch of zeros (best of a few)."""
    import numpy as np

    shape = tuple(int(side) for side in model.input_shape[1:])
    batch = np.zeros((LATENCY_BATCH, *shape), dtype=np.float32)
    model.predict_on_batch(batch)  # warm-up: tracing, first allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(batch)
        best = min(best, time.perf_counter() - start)
    return best / LATENCY_BATCH
