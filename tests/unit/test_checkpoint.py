import json
import os
import shutil
import signal

import numpy as np
import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.training.config import TrainConfig
from tbpipe.components.training.core import train_model
from tests.helpers import read_scalars, read_tags, synthetic_images, write_train_val

SETTINGS = dict(batch_size=16, learning_rate=0.01, seed=7)
STEPS = 4  # 64 examples / 16 per batch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_val(tmp_path_factory.mktemp("data"))


def run(data, root, epochs, checkpoint=True):
    config = TrainConfig(epochs=epochs, checkpoint_dir=str(root / "ckpt") if checkpoint else None,
                         **SETTINGS)
    return train_model(*data, str(root / "model"), str(root / "logs"), config)


def test_resume_gives_the_uninterrupted_metrics_and_steps(data, tmp_path):
    straight = run(data, tmp_path / "straight", 2, checkpoint=False)

    # Attempt 1 finishes epoch 1; attempt 2 logs epoch 2 but dies before its checkpoint is
    # published (simulated by restoring the epoch-1 checkpoint); attempt 3 resumes at epoch 1.
    root = tmp_path / "resumed"
    first = run(data, root, 1)
    shutil.copytree(root / "ckpt", tmp_path / "ckpt-epoch1")
    assert json.loads((root / "ckpt" / "state.json").read_text())["epoch"] == 1
    run(data, root, 2)
    shutil.rmtree(root / "ckpt")
    shutil.copytree(tmp_path / "ckpt-epoch1", root / "ckpt")
    resumed = run(data, root, 2)

    assert (first.resumed_from_epoch, resumed.resumed_from_epoch) == (0, 1)
    assert resumed.epochs_run == 2
    for key, value in straight.metrics.items():
        assert resumed.metrics[key] == pytest.approx(value, abs=1e-6), key
    ours, theirs = read_scalars(str(root / "logs")), read_scalars(str(tmp_path / "straight/logs"))
    for tag in ("batch/loss", "epoch/loss", "epoch/val_accuracy", "epoch/learning_rate"):
        steps = [s for s, _ in ours[tag]]
        assert steps == [s for s, _ in theirs[tag]], tag  # each step once, none missing
        np.testing.assert_allclose([v for _, v in ours[tag]], [v for _, v in theirs[tag]],
                                   atol=1e-6, err_msg=tag)
    assert [s for s, _ in ours["epoch/loss"]] == [STEPS, 2 * STEPS]
    assert ours["train/devices"] == [(1, 1.0), (STEPS + 1, 1.0)]  # one per surviving attempt
    assert [s for s, _ in ours["hparam/accuracy"]] == [STEPS, 2 * STEPS]  # attempt 2's purged
    tags = read_tags(str(root / "logs"))
    assert any(t.startswith("weights/") for t in tags["histograms"])
    state = json.loads((root / "ckpt" / "state.json").read_text())
    assert (state["epoch"], state["global_step"]) == (2, 2 * STEPS)
    assert sorted(os.listdir(root / "ckpt")) == ["ckpt-a.keras", "ckpt-b.keras", "state.json"]

    again = run(data, root, 2)  # a retry after the last checkpoint has nothing left to train
    assert again.resumed_from_epoch == 2 and again.metrics == pytest.approx(resumed.metrics)
    assert [s for s, _ in read_scalars(str(root / "logs"))["epoch/loss"]] == [STEPS, 2 * STEPS]


def test_resume_refuses_a_checkpoint_of_other_settings(data, tmp_path):
    from tbpipe.components.training.checkpoint import CheckpointState, check_resumable

    state = CheckpointState(epoch=2, global_step=8, slot="ckpt-a.keras", logs={},
                            fingerprint={"batch_size": 16, "seed": 7})
    check_resumable(state, {"batch_size": 16, "seed": 7}, epochs=2, checkpoint_dir="c")
    with pytest.raises(InputError, match="batch_size=16, now 32"):
        check_resumable(state, {"batch_size": 32, "seed": 7}, epochs=5, checkpoint_dir="c")
    with pytest.raises(InputError, match="beyond epochs=1"):
        check_resumable(state, {"batch_size": 16, "seed": 7}, epochs=1, checkpoint_dir="c")


def test_resume_follows_the_datas_content_not_its_path(data, tmp_path):
    """A rerun of a pipeline gets new artifact paths: a copy of the same data resumes, other
    data is refused with one line naming the changed input."""
    from tests.helpers import write_dataset

    first = run(data, tmp_path, 1)
    copies = tuple(str(tmp_path / "copy" / name) for name in ("train", "val"))
    for source, copy in zip(data, copies, strict=True):
        shutil.copytree(source, copy)
    resumed = run(copies, tmp_path, 2)
    assert (first.resumed_from_epoch, resumed.resumed_from_epoch) == (0, 1)

    other = str(tmp_path / "other" / "train")
    write_dataset(other, n=64, seed=9)  # same size and shape, other records
    with pytest.raises(InputError, match=r"ckpt: checkpoint made with train_data='sha256:"
                                         r"\w+', now 'sha256:\w+'; use a new run name") as err:
        run((other, copies[1]), tmp_path, 3)
    assert len(str(err.value).splitlines()) == 1


def test_damaged_state_is_one_line_input_error(tmp_path):
    from tbpipe.components.training.checkpoint import read_state

    assert read_state(str(tmp_path)) is None
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable checkpoint state") as err:
        read_state(str(tmp_path))
    assert "\n" not in str(err.value)


def test_sigterm_stops_training_at_the_next_batch():
    import keras

    from tbpipe.components.training.model import build_cnn
    from tbpipe.components.training.preemption import Preempted, StopOnSignal, sigterm_flag

    class SendSigterm(keras.callbacks.Callback):
        batches = 0

        def on_train_batch_end(self, batch, logs=None):
            SendSigterm.batches += 1
            if batch == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    images, labels = synthetic_images(64)
    model = build_cnn((8, 8, 1), 4, seed=0)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="SIGTERM; a retry resumes"), sigterm_flag() as flag:
        model.fit(images, labels, batch_size=8, epochs=2, verbose=0,
                  callbacks=[SendSigterm(), StopOnSignal(flag, "gs://b/ckpt")])
    assert SendSigterm.batches == 2
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.gcs
def test_checkpoints_logs_and_model_on_gcs_resume(data, gcs_root, tmp_path):
    from tbpipe.components.common.model_format import load_model_folder
    from tbpipe.components.common.storage import join, list_files

    def run_gcs(epochs):
        config = TrainConfig(epochs=epochs, checkpoint_dir=join(gcs_root, "ckpt"), **SETTINGS)
        return train_model(*data, join(gcs_root, "model"), join(gcs_root, "logs"), config)

    run_gcs(1)
    assert list_files(join(gcs_root, "ckpt")) == ["ckpt-a.keras", "state.json"]
    resumed = run_gcs(2)
    assert resumed.resumed_from_epoch == 1
    model, meta = load_model_folder(join(gcs_root, "model"))
    assert meta["epochs"] == 2 and model.output_shape == (None, 4)
    assert list_files(join(gcs_root, "model")) == ["model.json", "model.keras"]
