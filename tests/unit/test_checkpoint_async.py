"""StopOnSignal and EpochCheckpoint are async-safe: Keras runs batch-end hooks off the loop."""

import json
import os
import signal
import threading

import pytest

from tbpipe.components.training.checkpoint import EpochCheckpoint, read_state
from tbpipe.components.training.config import TrainConfig
from tbpipe.components.training.fit import FitJob, fit_and_save
from tbpipe.components.training.preemption import Preempted
from tests.helpers import read_scalars, write_train_val

STEPS, VAL_BATCHES = 4, 2  # 64 training and 32 validation examples, batches of 16


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_val(tmp_path_factory.mktemp("data"))


def make_probe(kill_at=None):
    """An async-safe callback counting validation batches; SIGTERM at ``kill_at``.

    ``kill_at``: ``(hook, epoch, batch)`` with hook ``train`` (before that training batch)
    or ``test`` (before that validation batch). Begin hooks run on the training loop.
    """
    import keras

    class Probe(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.epoch, self.val_batches = 0, []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def _maybe_kill(self, hook, batch):
            if kill_at == (hook, self.epoch, batch):
                os.kill(os.getpid(), signal.SIGTERM)

        def on_train_batch_begin(self, batch, logs=None):
            self._maybe_kill("train", batch)

        def on_test_begin(self, logs=None):
            self.val_batches.append(0)

        def on_test_batch_begin(self, batch, logs=None):
            self.val_batches[-1] += 1
            self._maybe_kill("test", batch)

    return Probe()


def fit(data, root, epochs, probe):
    from tbpipe.components.training.model import build_cnn

    def build(info, precision):
        return build_cnn(info.image_shape, info.num_classes, 7, 0.01, precision=precision,
                         jit_compile=False)

    job = FitJob(*data, str(root / "model"), str(root / "logs"), build, callbacks=(probe,))
    config = TrainConfig(epochs=epochs, batch_size=16, seed=7, checkpoint_dir=str(root / "ckpt"))
    return fit_and_save(job, config)


def test_the_train_steps_callbacks_allow_async_batch_hooks(monkeypatch, tmp_path):
    """Keras runs batch-end hooks on its callback threads only when every callback is
    async-safe and the backend is thread-safe (TensorFlow's is not, in Keras 3.15)."""
    import keras
    from keras.src import backend

    from tbpipe.components.training.preemption import StopOnSignal, sigterm_flag
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    class PlainBatchHook(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            pass

    monkeypatch.setattr(backend, "IS_THREAD_SAFE", True)
    with sigterm_flag() as flag:
        ours = [StopOnSignal(flag, None), TensorBoardX(None),
                EpochCheckpoint(str(tmp_path), {}, steps_per_epoch=4)]
        assert keras.callbacks.CallbackList(ours)._async_train
        assert not keras.callbacks.CallbackList([*ours, PlainBatchHook()])._async_train


def test_sigterm_mid_epoch_stops_after_the_batch_and_skips_the_epoch(data, tmp_path):
    probe = make_probe(kill_at=("train", 1, 1))  # SIGTERM during batch 1 of epoch 1
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="SIGTERM; a retry resumes from the last epoch's"):
        fit(data, tmp_path, 3, probe)
    assert signal.getsignal(signal.SIGTERM) is before
    assert probe.val_batches == [VAL_BATCHES, 1]  # the partial epoch: one, unused
    state = read_state(str(tmp_path / "ckpt"))
    assert (state.epoch, state.global_step) == (1, STEPS)
    scalars = read_scalars(str(tmp_path / "logs"))
    assert [s for s, _ in scalars["batch/loss"]] == list(range(1, STEPS + 3))  # all written
    assert [s for s, _ in scalars["epoch/loss"]] == [STEPS]  # not the partial epoch
    assert not (tmp_path / "model").exists()

    resumed = fit(data, tmp_path, 3, make_probe())
    straight = fit(data, tmp_path / "straight", 3, make_probe())
    assert resumed.resumed_from_epoch == 1
    assert resumed.metrics == pytest.approx(straight.metrics, abs=1e-6)
    ours = read_scalars(str(tmp_path / "logs"))
    assert [s for s, _ in ours["batch/loss"]] == list(range(1, 3 * STEPS + 1))  # each once


@pytest.mark.parametrize(("kill_at", "epochs", "preempted"), [
    (("train", 0, STEPS - 1), 2, True),  # in the last batch of an epoch
    (("test", 0, 0), 2, True),           # in its validation
    (("test", 1, 1), 2, False),          # in the last epoch's validation: nothing left to do
])
def test_sigterm_after_the_last_batch_keeps_the_epoch(data, tmp_path, kill_at, epochs,
                                                      preempted):
    probe = make_probe(kill_at=kill_at)
    if preempted:
        with pytest.raises(Preempted):
            fit(data, tmp_path, epochs, probe)
    else:
        assert fit(data, tmp_path, epochs, probe).epochs_run == epochs
    done = kill_at[1] + 1
    assert probe.val_batches == [VAL_BATCHES] * done  # validated whole, then checkpointed
    state = read_state(str(tmp_path / "ckpt"))
    assert (state.epoch, state.global_step) == (done, done * STEPS)
    assert (tmp_path / "model" / "model.json").exists() != preempted


def test_epoch_checkpoint_counts_batches_ending_out_of_order(tmp_path):
    from tbpipe.components.training.model import build_cnn

    saves = []
    callback = EpochCheckpoint(str(tmp_path), {"seed": 1}, steps_per_epoch=4, initial_step=8,
                               before_save=lambda: saves.append(True))
    callback.set_model(build_cnn((8, 8, 1), 4, seed=1, jit_compile=False))
    callback.on_epoch_begin(2)
    threads = [threading.Thread(target=callback.on_train_batch_end, args=(b,))
               for b in (2, 0, 3, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    callback.on_epoch_end(2, {"loss": 0.5})
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["epoch"], state["global_step"], state["slot"]) == (3, 12, "ckpt-a.keras")
    callback.on_epoch_begin(3)
    for batch in (0, 2):  # stopped before batch 3 ended: incomplete, no checkpoint
        callback.on_train_batch_end(batch)
    callback.on_epoch_end(3, {"loss": 0.4})
    assert saves == [True] and json.loads((tmp_path / "state.json").read_text())["epoch"] == 3
    assert callback.global_step == 15
