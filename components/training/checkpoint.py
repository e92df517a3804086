"""Per-epoch checkpoints and SIGTERM handling, so a preempted or retried step resumes.

A checkpoint folder (local or gs://) holds two model slots and one state file::

    ckpt-a.keras / ckpt-b.keras   model + optimizer state (Keras 3 format), written in turn
    state.json                    epoch, global step, which slot, what the run was made from

Each epoch writes the slot not named by ``state.json``, then ``state.json`` itself, each in one
atomic write or upload; a crash at any point leaves the previous checkpoint whole.
Stopping on SIGTERM (``StopOnSignal``, ``sigterm_flag``) is in
:mod:`tbpipe.components.training.preemption`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Callable, Mapping

import keras

from tbpipe.components.common.errors import InputError, StorageError, os_errors
from tbpipe.components.common.model_format import load_keras_file
from tbpipe.components.common.storage import (
    download_file,
    exists,
    join,
    read_bytes,
    upload_file,
    write_bytes,
)

STATE_FILE = "state.json"
SLOTS = ("ckpt-a.keras", "ckpt-b.keras")


@dataclasses.dataclass(frozen=True)
class CheckpointState:
    """What ``state.json`` records.

    Attributes:
        epoch: Epochs completed (the next epoch, 0-based, and its shuffle seed index).
        global_step: Training batches completed, the TensorBoard step of the last event.
        slot: The model file holding this checkpoint.
        fingerprint: The settings and inputs it was made with; a resume must match them.
        logs: The last epoch's metrics (loss, accuracy, val_loss, val_accuracy).

    """

    epoch: int
    global_step: int
    slot: str
    fingerprint: dict
    logs: dict


def read_state(checkpoint_dir: str) -> CheckpointState | None:
    """Read the checkpoint state in ``checkpoint_dir`` (None when there is none yet)."""
    uri = join(checkpoint_dir, STATE_FILE)
    if not exists(uri):
        return None
    try:
        return CheckpointState(**json.loads(read_bytes(uri)))
    except (ValueError, TypeError) as exc:
        raise InputError(f"{uri}: unreadable checkpoint state ({exc}); delete the folder "
                         "to start over") from exc


def resume_state(checkpoint_dir: str, fingerprint: Mapping[str, object],
                 epochs: int) -> CheckpointState | None:
    """Return the checkpoint to resume from (None: start fresh); InputError if foreign."""
    state = read_state(checkpoint_dir)
    if state is not None:
        check_resumable(state, fingerprint, epochs, checkpoint_dir)
    return state


def check_resumable(state: CheckpointState, fingerprint: Mapping[str, object], epochs: int,
                    checkpoint_dir: str) -> None:
    """InputError unless ``state`` was made by the same settings and inputs."""
    changed = sorted(k for k in {*fingerprint, *state.fingerprint}
                     if fingerprint.get(k) != state.fingerprint.get(k))
    if changed:
        key = changed[0]
        raise InputError(
            f"{checkpoint_dir}: checkpoint made with {key}={state.fingerprint.get(key)!r}, "
            f"now {fingerprint.get(key)!r}; use a new run name or delete the checkpoint folder")
    if state.epoch > epochs:
        raise InputError(f"{checkpoint_dir}: checkpoint is at epoch {state.epoch}, beyond "
                         f"epochs={epochs}; raise epochs or use a new run name")


def load_checkpoint(checkpoint_dir: str, state: CheckpointState) -> keras.Model:
    """Load the checkpointed model, compiled, with its optimizer state (steps, moments)."""
    return load_keras_file(join(checkpoint_dir, state.slot), compile=True)


def copy_checkpoint(source_dir: str, local_dir: str) -> CheckpointState | None:
    """Copy the checkpoint in ``source_dir`` (its slot, then its state) to ``local_dir``.

    What a non-chief worker resumes from: the chief's checkpoint, in its own scratch folder,
    where its own (discarded) checkpoints go. None, copying nothing, when there is none.
    """
    state = read_state(source_dir)
    if state is not None:
        download_file(join(source_dir, state.slot), os.path.join(local_dir, state.slot))
        write_bytes(os.path.join(local_dir, STATE_FILE),
                    json.dumps(dataclasses.asdict(state), indent=2).encode())
    return state


def save_checkpoint(model: keras.Model, checkpoint_dir: str, state: CheckpointState) -> None:
    """Publish ``model`` into ``state.slot``, then ``state.json`` (each write atomic).

    Raises:
        StorageError: a write failed (one line naming the file and the cause); the previous
            checkpoint is left whole.

    """
    slot_uri = join(checkpoint_dir, state.slot)
    with os_errors(slot_uri), tempfile.TemporaryDirectory(prefix="tbpipe-ckpt-") as tmp:
        local = os.path.join(tmp, state.slot)
        model.save(local)
        upload_file(local, slot_uri)
    write_bytes(join(checkpoint_dir, STATE_FILE),
                json.dumps(dataclasses.asdict(state), indent=2).encode())


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint after every complete epoch, alternating the two slots.

    ``async_safe``: batches are counted from Keras' batch index (the last batch of a call
    with ``steps_per_execution``), in any order, so Keras may run the batch hook on its
    callback threads (it waits for all of them before ``on_epoch_end``).

    Args:
        checkpoint_dir: Where checkpoints go (local or gs://).
        fingerprint: Recorded so a resume can check it continues the same run.
        steps_per_epoch: Batches in a complete epoch.
        initial_step: Batches done before this attempt.
        last_slot: The slot of the checkpoint resumed from (None for a fresh run).
        before_save: Called before each save, e.g. to write the epoch's TensorBoard events
            first, so a checkpoint is never ahead of the logs.

    """

    async_safe = True

    def __init__(self, checkpoint_dir: str, fingerprint: Mapping[str, object],
                 steps_per_epoch: int, initial_step: int = 0, last_slot: str | None = None,
                 before_save: Callable[[], object] | None = None):
        super().__init__()
        self.before_save = before_save
        self.checkpoint_dir = checkpoint_dir
        self.fingerprint = dict(fingerprint)
        self.steps_per_epoch = steps_per_epoch
        self.global_step = initial_step
        self._epoch_start = initial_step
        self._batches = 0  # batches of this epoch that have ended (the highest index + 1)
        self._lock = threading.Lock()
        self._slot = last_slot

    def on_epoch_begin(self, epoch: int, logs=None) -> None:  # noqa: D102
        self._epoch_start, self._batches = self.global_step, 0

    def on_train_batch_end(self, batch: int, logs=None) -> None:  # noqa: D102
        with self._lock:  # callback threads may end batches out of order
            self._batches = max(self._batches, batch + 1)

    def on_epoch_end(self, epoch: int, logs=None) -> None:  # noqa: D102
        self.global_step = self._epoch_start + self._batches
        if self._batches != self.steps_per_epoch:
            return
        self._slot = SLOTS[1] if self._slot == SLOTS[0] else SLOTS[0]
        state = CheckpointState(epoch=epoch + 1, global_step=self.global_step, slot=self._slot,
                                fingerprint=self.fingerprint,
                                logs={k: float(v) for k, v in (logs or {}).items()})
        if self.before_save is not None:
            self.before_save()
        try:
            save_checkpoint(self.model, self.checkpoint_dir, state)
        except StorageError as exc:
            raise StorageError(f"checkpoint after epoch {epoch + 1}: {exc}") from exc
        print(f"checkpoint: epoch {epoch + 1} saved to {self.checkpoint_dir}", flush=True)
