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
        DatasetWriter(str(tmp_path), (2, 2, 1), 300)
