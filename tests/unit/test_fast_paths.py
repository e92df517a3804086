"""The performance paths: the writer's thread queue, deferred scalars/histograms, train options."""

import numpy as np
import pytest

from tbpipe.components.common.tensorboard import fastpath
from tbpipe.components.common.tensorboard.writer import open_writer, sync_events
from tests.helpers import read_scalars, read_tags, write_dataset


def _histograms(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"histograms": 0})
    acc.Reload()
    return {tag: acc.Histograms(tag) for tag in acc.Tags()["histograms"]}


def test_open_writer_uses_a_thread_queue(tmp_path):
    with open_writer(str(tmp_path)) as writer:
        assert isinstance(fastpath.pending_queue(writer), fastpath.EventQueue)


def test_add_scalars_writes_what_add_scalar_writes(tmp_path):
    fast, plain = str(tmp_path / "fast"), str(tmp_path / "plain")
    with open_writer(fast) as writer:
        for step in range(1, 301):
            fastpath.add_scalars(writer, {"batch/loss": 1 / step, "batch/accuracy": step / 300},
                                 step)
        writer.add_scalar("epoch/loss", 0.5, 300)
    from tensorboardX import SummaryWriter

    with SummaryWriter(plain) as writer:
        for step in range(1, 301):
            writer.add_scalar("batch/loss", 1 / step, step)
            writer.add_scalar("batch/accuracy", step / 300, step)
        writer.add_scalar("epoch/loss", 0.5, 300)
    got, want = read_scalars(fast), read_scalars(plain)
    assert set(got) == {"batch/loss", "batch/accuracy", "epoch/loss"}
    for tag in want:
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]]
        np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in want[tag]])


def test_add_histogram_bins_like_tensorboardx(tmp_path):
    values = np.random.default_rng(0).normal(0, 0.05, 5000).astype(np.float32)
    fast, plain = str(tmp_path / "fast"), str(tmp_path / "plain")
    with open_writer(fast) as writer:
        fastpath.add_histogram(writer, "weights/w", values, 7)
        values[:] = 0  # the caller may change its array afterwards: a copy was queued
    from tensorboardX import SummaryWriter

    with SummaryWriter(plain) as writer:
        writer.add_histogram("weights/w", np.random.default_rng(0).normal(0, 0.05, 5000)
                             .astype(np.float32), 7)
    (got,), (want,) = _histograms(fast)["weights/w"], _histograms(plain)["weights/w"]
    assert got.step == want.step == 7
    assert list(got.histogram_value.bucket) == list(want.histogram_value.bucket)
    assert got.histogram_value.bucket[:] != [] and got.histogram_value.max > 0


def test_sync_events_writes_deferred_events_before_close(tmp_path):
    with open_writer(str(tmp_path), flush_secs=60) as writer:
        for step in range(1, 51):
            fastpath.add_scalars(writer, {"batch/loss": 1.0}, step)
        fastpath.add_histogram(writer, "weights/w", np.arange(10.0), 50)
        assert sync_events(writer, timeout=10)
        assert len(read_scalars(str(tmp_path))["batch/loss"]) == 50
        assert "weights/w" in read_tags(str(tmp_path))["histograms"]


def test_a_value_that_cannot_be_binned_does_not_stop_the_log(tmp_path, capsys):
    with open_writer(str(tmp_path)) as writer:
        fastpath.add_histogram(writer, "weights/empty", np.array([]), 1)
        fastpath.add_scalars(writer, {"batch/loss": 2.0}, 2)
    assert read_scalars(str(tmp_path))["batch/loss"] == [(2, 2.0)]
    assert "skipped an event" in capsys.readouterr().out


def test_fallback_without_the_thread_queue(tmp_path):
    from tensorboardX import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        fastpath.add_scalars(writer, {"a": 1.0, "b": 2.0}, 3)
        fastpath.add_histogram(writer, "h", np.arange(5.0), 3)
    assert read_scalars(str(tmp_path)) == {"a": [(3, 1.0)], "b": [(3, 2.0)]}
    assert read_tags(str(tmp_path))["histograms"] == ["h"]


def test_shuffled_batches_work_with_global_seed_zero(tmp_path):
    import keras

    from tbpipe.components.training.data import make_dataset

    write_dataset(str(tmp_path / "d"), n=40)
    keras.utils.set_random_seed(0)  # what train_model does for seed=0
    first = [y.numpy().tolist() for _, y in make_dataset(str(tmp_path / "d"), 8, True, 0,
                                                         num_epochs=2)]
    again = [y.numpy().tolist() for _, y in make_dataset(str(tmp_path / "d"), 8, True, 0,
                                                         first_epoch=1)]
    assert len(first) == 10 and first[5:] == again  # epoch 1 alone = epoch 1 of two
    assert sorted(sum(first[:5], [])) == sorted(sum(first[5:], []))


def test_plain_model_is_float32_without_xla():
    from tbpipe.components.training.model import build_cnn, model_precision

    model = build_cnn((8, 8, 1), 4, seed=1, jit_compile=False)
    assert model_precision(model) == "float32" and model.layers[0].compute_dtype == "float32"
    assert model.jit_compile is False


def test_fit_job_runs_extra_callbacks(tmp_path):
    import keras

    from tbpipe.components.training.config import TrainConfig
    from tbpipe.components.training.fit import FitJob, fit_and_save
    from tbpipe.components.training.model import build_cnn

    write_dataset(str(tmp_path / "d"), n=48)
    ends = []

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(epoch)

    def build(info, precision):
        return build_cnn(info.image_shape, info.num_classes, 42, precision=precision)

    job = FitJob(str(tmp_path / "d"), str(tmp_path / "d"), str(tmp_path / "m"),
                 str(tmp_path / "logs"), build, callbacks=(Count(),))
    fit_and_save(job, TrainConfig(epochs=2, batch_size=16))
    assert ends == [0, 1]


@pytest.mark.parametrize("precision", ["auto", "mixed_float16"])
def test_train_model_precision_setting(tmp_path, precision):
    from tbpipe.components.common.model_format import load_model_folder
    from tbpipe.components.training.config import TrainConfig
    from tbpipe.components.training.core import train_model
    from tbpipe.components.training.model import model_precision, resolve_precision

    write_dataset(str(tmp_path / "d"), n=48)
    config = TrainConfig(epochs=1, batch_size=16, precision=precision)
    train_model(str(tmp_path / "d"), str(tmp_path / "d"), str(tmp_path / "m"),
                str(tmp_path / "logs"), config)
    model, meta = load_model_folder(str(tmp_path / "m"))
    expected = resolve_precision(precision)  # auto: float16 on a GPU, bfloat16 with AMX
    assert model_precision(model) == meta["precision"] == expected


def _steps_in_file_order(log_dir, tag):
    import glob

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for path in sorted(glob.glob(f"{log_dir}/events.*")):
        for event in EventFileLoader(path).Load():
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def test_batches_ending_out_of_order_are_logged_in_order(tmp_path):
    from tbpipe.components.training.model import build_cnn
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    with open_writer(str(tmp_path)) as writer:
        callback = TensorBoardX(writer, batch_every=2, histogram_every=0, initial_epoch=1,
                                steps_per_epoch=6, global_steps=True, initial_step=6)
        callback.set_model(build_cnn((8, 8, 1), 4, seed=1, jit_compile=False))
        callback.on_epoch_begin(1)
        for batch in (1, 2, 0, 5, 4, 3):  # as Keras' callback threads might finish them
            callback.on_train_batch_end(batch, {"loss": float(batch)})
        assert callback._step == 12
        callback.on_epoch_end(1, {"loss": 0.5})
    assert _steps_in_file_order(str(tmp_path), "batch/loss") == [7, 9, 11]
    assert read_scalars(str(tmp_path))["batch/loss"] == [(7, 0.0), (9, 2.0), (11, 4.0)]
    assert read_scalars(str(tmp_path))["epoch/loss"] == [(12, 0.5)]


def test_every_batch_of_a_fit_is_logged_in_order(tmp_path):
    from tbpipe.components.training.model import build_cnn
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    model = build_cnn((8, 8, 1), 4, seed=1, jit_compile=False)
    x = np.random.default_rng(0).random((96, 8, 8, 1)).astype(np.float32)
    with open_writer(str(tmp_path)) as writer:
        callback = TensorBoardX(writer, histogram_every=1, steps_per_epoch=6, global_steps=True)
        model.fit(x, np.arange(96) % 4, batch_size=16, epochs=2, verbose=0,
                  callbacks=[callback])
    assert _steps_in_file_order(str(tmp_path), "batch/loss") == list(range(1, 13))
    assert [s for s, _ in read_scalars(str(tmp_path))["epoch/loss"]] == [6, 12]
    assert len(read_tags(str(tmp_path))["histograms"]) == 8


def _preprocess(tmp_path, name, data):
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data

    out = tmp_path / f"{name}-out"
    result = preprocess_data(data, str(out / "train"), str(out / "val"), str(out / "test"), None,
                             PreprocessConfig(chunk_rows=16))
    shards = {split: b"".join(p.read_bytes() for p in sorted((out / split).glob("shard-*")))
              for split in ("train", "val", "test")}
    return result, shards


def test_integer_tables_take_the_integer_path_with_the_same_result(tmp_path):
    import pandas as pd

    from tbpipe.components.preprocessing.clean import byte_histogram, clean_chunk
    from tbpipe.components.preprocessing.source import RawChunk

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (60, 16))
    pixels[5, 3], pixels[9, 0] = 256, -3  # out of range
    labels = np.arange(60) % 3
    frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(16)])
    frame.insert(0, "label", labels)
    frame.to_csv(tmp_path / "ints.csv", index=False)
    frame.to_parquet(tmp_path / "ints.parquet")
    frame.astype(float).to_csv(tmp_path / "floats.csv", index=False)  # "3.0": the float path
    images, kept, dropped = clean_chunk("t", RawChunk(pixels, labels), 255.0, (4, 4, 1))
    assert images.dtype == np.uint8 and len(kept) == 58
    assert dropped == {"missing": 0, "out_of_range": 2}
    results = {name: _preprocess(tmp_path, name, str(tmp_path / name))
               for name in ("ints.csv", "ints.parquet", "floats.csv")}
    assert results["ints.csv"][0].stats["dropped"] == dropped
    assert results["ints.csv"][1] == results["floats.csv"][1] == results["ints.parquet"][1]
    assert results["ints.csv"][0].stats == {**results["floats.csv"][0].stats,
                                            "source": str(tmp_path / "ints.csv")}
    assert (byte_histogram(images) == np.bincount(images.ravel(), minlength=256)).all()


def test_parquet_row_groups_nulls_and_big_values(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (50, 16))
    labels = np.arange(50) % 2
    columns = {"label": pa.array(labels)}
    columns.update({f"pixel{i}": pa.array(pixels[:, i]) for i in range(16)})
    table = pa.table(columns)
    pq.write_table(table, tmp_path / "one.parquet")
    pq.write_table(table, tmp_path / "groups.parquet", row_group_size=7)
    one, groups = (_preprocess(tmp_path, n, str(tmp_path / n))
                   for n in ("one.parquet", "groups.parquet"))
    assert one[1] == groups[1] and one[0].stats["rows_kept"] == 50
    odd = pixels.astype(object)
    odd[3, 2], odd[8, 5] = None, 70_000  # a null, and a value beyond int16
    columns.update({f"pixel{i}": pa.array(list(odd[:, i])) for i in range(16)})
    pq.write_table(pa.table(columns), tmp_path / "odd.parquet", row_group_size=7)
    result, _ = _preprocess(tmp_path, "odd.parquet", str(tmp_path / "odd.parquet"))
    assert result.stats["dropped"] == {"missing": 1, "out_of_range": 1}
