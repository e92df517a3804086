"""Stream a tbpipe Dataset folder into batches with tf.data: native, parallel, no per-sample Python.

Records are held in memory as raw bytes (when they fit; else read with
``FixedLengthRecordDataset``, shards in parallel), shuffled per epoch with a seed derived from
``(seed, epoch)``, batched, and only then decoded, one vectorized op per batch. The per-epoch
seed makes epoch ``e``'s order the same whether training started at epoch 0 or resumed at
``e`` from a checkpoint.

tf.data's autotuning is off, with fixed parallelism (one decode per CPU, two batches
prefetched): with it on, destroying an iterator (Keras does at the end of ``fit`` and of each
validation pass) waits for the autotuning thread's next wake-up, which grows to a minute
apart; that idle wait after the last epoch was seconds to half a minute (docs/performance.md).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import tensorflow as tf

from tbpipe.components.common.dataset import MANIFEST, DatasetInfo, read_info
from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.common.limits import MAX_METADATA_BYTES
from tbpipe.components.common.storage import is_remote, join, read_bounded_uri

DEFAULT_SHUFFLE_BUFFER = 50_000
_EPOCH_SEED_STRIDE = 1_000_003
_GRAPH_SEED = 20_240_917  # any non-zero constant: the graph half of every epoch's seed pair
PREFETCH_BATCHES = 2
# Records held in memory are one tensor that tf.data may serialize with the dataset's graph
# (a distribution strategy does), and a serialized graph holds at most 2 GiB.
MAX_IN_MEMORY_BYTES = 2**30


def data_workers() -> int:
    """Threads for reading and decoding: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data's autotuning off (its iterators are destroyed without a wait)."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def epoch_seed(seed: int, epoch: int | tf.Tensor) -> int | tf.Tensor:
    """Return the shuffle seed of ``epoch`` (0-based) for a run seeded with ``seed``."""
    return seed * _EPOCH_SEED_STRIDE + epoch


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Batches per epoch (the last one may be partial)."""
    return -(-num_examples // batch_size)


def make_dataset(dataset_dir: str, batch_size: int, shuffle: bool, seed: int,
                 cache: bool = True, first_epoch: int = 0, num_epochs: int = 1,
                 shuffle_buffer: int | None = None) -> tf.data.Dataset:
    """Batches of ``(images float32 (b, H, W, C) in [0, 1], labels int32 (b,))``.

    Cached, the raw records are read into memory once and each epoch shuffles their indices
    (a full shuffle whose first batch needs no buffer of records filled first); not cached,
    the records stream from the shards through a shuffle buffer.

    Args:
        dataset_dir: A tbpipe Dataset folder (local, or gs:// which tf.io reads directly).
        batch_size: Records per batch (the last batch of each epoch may be smaller).
        shuffle: Shuffle each epoch; epoch ``e`` uses the seed ``epoch_seed(seed, e)``.
        seed: The run's seed.
        cache: Hold the raw records in memory (when they fit).
        first_epoch: The 0-based index of the first epoch produced (on resume).
        num_epochs: How many epochs of batches to produce, one after the other.
        shuffle_buffer: Records in the shuffle buffer when not cached; default at most
            ``DEFAULT_SHUFFLE_BUFFER``.

    """
    info = read_dataset_info(dataset_dir)
    shards = info.shard_paths(dataset_dir)
    if cache:
        rows = _read_rows(shards, info)  # uint8 (n, record_bytes)
        source = tf.data.Dataset.range(info.num_examples)
        buffer = max(1, info.num_examples)
    else:
        source = tf.data.FixedLengthRecordDataset(
            shards, info.record_bytes, num_parallel_reads=max(1, min(data_workers(), len(shards))))
        buffer = max(1, min(shuffle_buffer or DEFAULT_SHUFFLE_BUFFER, info.num_examples))

    def one_epoch(epoch: tf.Tensor) -> tf.data.Dataset:
        ordered = source
        if shuffle:
            # The seed pair is (graph seed, epoch seed); a fixed graph seed in this function's
            # own graph keeps the order a function of (seed, epoch) only, and avoids
            # TensorFlow's failure with a tensor op seed when the global seed is 0.
            tf.random.set_seed(_GRAPH_SEED)
            ordered = source.shuffle(buffer, seed=epoch_seed(seed, epoch),
                                     reshuffle_each_iteration=False)
        return ordered.batch(batch_size)

    # One dataset whatever the number of epochs: each epoch's batches are made when reached.
    epochs = tf.data.Dataset.range(first_epoch, first_epoch + num_epochs)
    total = steps_per_epoch(info.num_examples, batch_size) * num_epochs
    batches = epochs.flat_map(one_epoch)
    batches = batches.apply(tf.data.experimental.assert_cardinality(total))
    decode_rows = _decoder(info)
    if cache:
        def decode(indices: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return decode_rows(tf.gather(rows, indices))
    else:
        def decode(raw: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return decode_rows(tf.reshape(tf.io.decode_raw(raw, tf.uint8),
                                          (-1, info.record_bytes)))
    decoded = batches.map(decode, num_parallel_calls=data_workers())
    return without_autotune(decoded.prefetch(PREFETCH_BATCHES))


def _read_rows(shards: list[str], info: DatasetInfo) -> tf.Tensor:
    """All records of ``shards`` as one uint8 ``(num_examples, record_bytes)`` tensor."""
    parts = [tf.io.decode_raw(tf.io.read_file(path), tf.uint8) for path in shards]
    flat = tf.concat(parts, 0) if parts else tf.zeros((0,), tf.uint8)
    return tf.reshape(flat, (-1, info.record_bytes))


def fit_datasets(train_uri: str, val_uri: str, batch_size: int, seed: int, epochs: range,
                 cache_max_mb: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """Build the shuffled training batches of ``epochs`` (0-based) and the validation batches.

    Raw records are held in memory when the training set is at most ``cache_max_mb`` (and
    ``MAX_IN_MEMORY_BYTES``). The
    set-up does not grow with the number of epochs (one dataset makes each epoch when it
    is reached), so ``epochs`` may be as large as the settings allow.
    """
    info = read_dataset_info(train_uri)
    size = info.num_examples * info.record_bytes
    cache = size <= min(cache_max_mb * 2**20, MAX_IN_MEMORY_BYTES)
    train = make_dataset(train_uri, batch_size, True, seed, cache=cache,
                         first_epoch=epochs.start, num_epochs=len(epochs))
    return (shard_by_data(train),
            shard_by_data(make_dataset(val_uri, batch_size, False, seed, cache=cache)))


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` split among workers by its batches' records, never by its files.

    Only a multi-worker strategy reads this option: each worker makes the same global
    batches and keeps its replicas' part of each (tf.data's ``AutoShardPolicy.DATA``), so
    N workers train on exactly the batches one would, whatever the number of shard files
    (sharding by file would leave a worker without any on a small set).
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


def read_dataset_info(dataset_dir: str) -> DatasetInfo:
    """Read a Dataset folder's manifest (local or gs://); InputError if there is none."""
    if not is_remote(dataset_dir):
        return read_info(dataset_dir)
    try:  # at most MAX_METADATA_BYTES of it come into memory (a bigger one: one line)
        manifest = read_bounded_uri(join(dataset_dir, MANIFEST), MAX_METADATA_BYTES, MANIFEST)
    except StorageError as exc:
        raise InputError(f"{dataset_dir}: not a tbpipe Dataset ({exc})") from exc
    with tempfile.TemporaryDirectory(prefix="tbpipe-manifest-") as tmp:
        Path(tmp, MANIFEST).write_bytes(manifest)
        return read_info(tmp)


def _decoder(info: DatasetInfo):  # noqa: ANN202 - a tf.function-compatible callable
    height, width, channels = info.image_shape

    def decode_rows(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """uint8 records ``(b, record_bytes)``: label bytes, then the pixels."""
        labels = tf.cast(values[:, 0], tf.int32)
        if info.label_bytes == 2:  # little-endian uint16 (more than 256 classes)
            labels += tf.cast(values[:, 1], tf.int32) * 256
        pixels = tf.reshape(values[:, info.label_bytes:], (-1, height, width, channels))
        return tf.cast(pixels, tf.float32) / 255.0, labels

    return decode_rows


def check_compatible(train: DatasetInfo, val: DatasetInfo, train_uri: str, val_uri: str) -> None:
    """InputError unless both data sets are non-empty and share image shape and classes."""
    for uri, info in ((train_uri, train), (val_uri, val)):
        if info.num_examples == 0:
            raise InputError(f"{uri}: the dataset is empty; check the preprocess step's input")
    if (train.image_shape, train.num_classes) != (val.image_shape, val.num_classes):
        raise InputError(
            f"{val_uri}: images {val.image_shape} with {val.num_classes} classes do not match "
            f"{train_uri} ({train.image_shape}, {train.num_classes} classes); "
            "pass splits of the same dataset")
