"""The train step's tf.data input: no autotuning (no wait on teardown), full per-epoch shuffles."""

import numpy as np
import pytest

from tests.helpers import write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("input") / "d")
    write_dataset(root, n=90, shard_records=40)  # three shards
    return root


def images_of_epochs(dataset, epochs: int, cache: bool) -> list[np.ndarray]:
    from tbpipe.components.training.data import make_dataset

    batches = list(make_dataset(dataset, 16, True, seed=3, cache=cache, num_epochs=epochs))
    per_epoch = len(batches) // epochs
    return [np.concatenate([b[0].numpy() for b in batches[e * per_epoch:(e + 1) * per_epoch]])
            for e in range(epochs)]


@pytest.mark.parametrize("cache", [True, False])
def test_every_epoch_is_a_shuffle_of_all_records(dataset, cache):
    from tbpipe.components.training.data import make_dataset

    ordered = np.concatenate([b[0].numpy() for b in make_dataset(dataset, 16, False, 0,
                                                                  cache=cache)])
    key = [tuple(image.ravel()) for image in ordered]
    first, second = images_of_epochs(dataset, 2, cache)
    for epoch in (first, second):
        assert sorted(tuple(image.ravel()) for image in epoch) == sorted(key)
    assert not np.array_equal(first, ordered) and not np.array_equal(first, second)


def test_in_memory_and_streamed_records_decode_alike(dataset):
    from tbpipe.components.training.data import make_dataset

    def records(cache: bool) -> list[tuple]:  # streamed shards interleave: compare as sets
        return sorted((int(y), tuple(x.ravel())) for images, labels in
                      make_dataset(dataset, 32, False, 0, cache=cache)
                      for x, y in zip(images.numpy(), labels.numpy(), strict=True))

    memory = records(True)
    assert len(memory) == 90 and memory == records(False)


def test_autotuning_is_off_for_train_and_validation(dataset):
    from tbpipe.components.training.data import fit_datasets

    for batches in fit_datasets(dataset, dataset, 16, 0, range(0, 2), cache_max_mb=64):
        assert batches.options().autotune.enabled is False
