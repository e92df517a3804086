import json

import numpy as np
import pytest

from tbpipe.components.common.dataset import (
    DatasetWriter,
    iter_shards,
    load_arrays,
    read_info,
    to_uint8,
)
from tbpipe.components.common.errors import InputError
from tests.helpers import synthetic_images, write_dataset


def test_round_trip_across_shards(tmp_path):
    images, labels = synthetic_images(25, shape=(4, 5, 1), classes=3)
    writer = DatasetWriter(str(tmp_path), (4, 5, 1), 3, shard_records=10)
    writer.write(images[:7], labels[:7])
    writer.write(images[7:], labels[7:])
    info = writer.close()
    assert [count for _, count in info.shards] == [10, 10, 5]
    assert info.num_examples == 25
    assert sum(info.class_counts) == 25
    x, y = load_arrays(str(tmp_path))
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_allclose(x, to_uint8(images) / 255.0, atol=1e-7)
    assert read_info(str(tmp_path)) == info


def test_quantization_error_is_below_half_a_step():
    values = np.linspace(0, 1, 1001, dtype=np.float32)
    assert np.abs(to_uint8(values) / 255.0 - values).max() <= 0.5 / 255 + 1e-7


def test_damaged_shard_is_reported(tmp_path):
    write_dataset(str(tmp_path), n=12)
    with open(tmp_path / "shard-00000.bin", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(InputError, match="damaged"):
        list(iter_shards(str(tmp_path)))


def test_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="not a tbpipe Dataset"):
        read_info(str(tmp_path))


def test_too_many_classes(tmp_path):
    with pytest.raises(InputError, match="classes"):
        DatasetWriter(str(tmp_path), (2, 2, 1), 65_537)


def three_hundred_classes(n: int = 900) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    labels = np.arange(n) % 300
    images = rng.integers(0, 256, (n, 2, 3, 1), dtype=np.uint8)
    return images, labels


def test_three_hundred_classes_round_trip_with_two_byte_labels(tmp_path):
    images, labels = three_hundred_classes()
    writer = DatasetWriter(str(tmp_path), (2, 3, 1), 300, shard_records=400)
    writer.class_names = tuple(f"k{i}" for i in range(300))
    writer.write(images, labels)
    info = writer.close()
    assert info.label_bytes == 2 and info.record_bytes == 2 + 6
    assert (tmp_path / "shard-00000.bin").stat().st_size == 400 * 8
    read = read_info(str(tmp_path))
    assert read == info and read.class_names[299] == "k299"
    got = list(iter_shards(str(tmp_path)))
    np.testing.assert_array_equal(np.concatenate([g[1] for g in got]), labels)
    np.testing.assert_array_equal(np.concatenate([g[0] for g in got]), images)


def test_one_byte_writer_widens_at_a_label_above_255(tmp_path):
    images, labels = three_hundred_classes()
    wide = DatasetWriter(str(tmp_path / "wide"), (2, 3, 1), 300, shard_records=100)
    narrow = DatasetWriter(str(tmp_path / "narrow"), (2, 3, 1), 300, shard_records=100,
                           label_bytes=1)
    for writer in (wide, narrow):
        writer.write(images[:250], labels[:250])  # labels 0..249: fit one byte
        writer.write(images[250:], labels[250:])
    a, b = wide.close(), narrow.close()
    assert b.label_bytes == 2 and a == b  # same records, same digest
    got = np.concatenate([g[1] for g in iter_shards(str(tmp_path / "narrow"))])
    np.testing.assert_array_equal(got, labels)


def test_old_manifest_without_label_bytes_or_names_still_reads(tmp_path):
    info = write_dataset(str(tmp_path), n=12, classes=3)
    manifest = json.loads((tmp_path / "dataset.json").read_text())
    assert manifest["label_bytes"] == 1 and manifest["class_names"] == ["0", "1", "2"]
    del manifest["label_bytes"], manifest["class_names"]
    (tmp_path / "dataset.json").write_text(json.dumps(manifest))
    old = read_info(str(tmp_path))
    assert old == info
    assert old.class_names == ("0", "1", "2") and old.record_bytes == 1 + 64
    _, labels = load_arrays(str(tmp_path))
    assert sorted(set(labels.tolist())) == [0, 1, 2]


def test_tf_data_reads_two_byte_labels(tmp_path):
    from tbpipe.components.training.data import make_dataset

    images, labels = three_hundred_classes()
    writer = DatasetWriter(str(tmp_path), (2, 3, 1), 300, shard_records=400)
    writer.write(images, labels)
    writer.close()
    batches = list(make_dataset(str(tmp_path), 256, shuffle=False, seed=0).as_numpy_iterator())
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.shape == (900, 2, 3, 1)

    def rows(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:  # order-free comparison
        table = np.concatenate([ys[:, None], np.rint(xs.reshape(len(ys), -1) * 255)], axis=1)
        return table[np.lexsort(table.T[::-1])]

    np.testing.assert_array_equal(rows(x, y), rows(images / 255.0, labels))
