"""The tbpipe Dataset format: sharded fixed-length binary records plus a JSON manifest.

A Dataset artifact is a folder::

    dataset.json          manifest: image shape, classes, shard files and counts
    shard-00000.bin       records, each 1 label byte followed by H*W*C pixel bytes
    shard-00001.bin       (pixel byte b means the value b / 255 in [0, 1])

Fixed-length records stream straight into ``tf.data.FixedLengthRecordDataset`` (native,
parallel reads, no Python per sample), and any number of shards can be written one chunk at
a time, so a table larger than memory goes through. numpy reads them with ``np.fromfile``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tbpipe.components.common.errors import InputError, os_errors

MANIFEST = "dataset.json"
FORMAT = "tbpipe.records.v1"
MAX_CLASSES = 256
DEFAULT_SHARD_RECORDS = 50_000


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a Dataset folder holds."""

    image_shape: tuple[int, int, int]
    num_classes: int
    num_examples: int
    shards: tuple[tuple[str, int], ...]
    class_counts: tuple[int, ...]
    digest: str = ""  # sha256 of the image shape and every record in order ("" if unknown)

    @property
    def record_bytes(self) -> int:
        """Bytes per record: one label byte plus the pixels."""
        h, w, c = self.image_shape
        return 1 + h * w * c

    def shard_paths(self, root: str) -> list[str]:
        """Absolute paths of the shard files under ``root``."""
        return [os.path.join(root, name) for name, _ in self.shards]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantize images with values in [0, 1] to bytes (b = round(255 * v))."""
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


class DatasetWriter:
    """Writes records chunk by chunk into shards of at most ``shard_records`` records.

    A failed write (disk full, read-only file system, a file where the folder should be) is
    one StorageError line naming ``name`` (the Dataset's own path; ``root`` may be a
    temporary folder, see :func:`~tbpipe.components.common.storage.atomic_dir`) and the
    cause. The manifest is written last, whole, so a failed writer leaves no Dataset.
    """

    def __init__(self, root: str, image_shape: tuple[int, int, int], num_classes: int,
                 shard_records: int = DEFAULT_SHARD_RECORDS, name: str | None = None) -> None:
        if not 1 <= num_classes <= MAX_CLASSES:
            raise InputError(f"{num_classes} classes: the record format holds 1 to {MAX_CLASSES}")
        self.root = Path(root)
        self.name = name or str(root)
        with os_errors(self.name):
            self.root.mkdir(parents=True, exist_ok=True)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = num_classes
        self.shard_records = shard_records
        self._shards: list[list] = []
        self._handle = None
        self._counts = np.zeros(num_classes, dtype=np.int64)
        self._hash = hashlib.sha256(json.dumps(list(self.image_shape)).encode())

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append images (uint8, or floats in [0, 1]) shaped (n, H, W, C) and their labels."""
        if images.dtype != np.uint8:
            images = to_uint8(images)
        n = len(labels)
        if not n:
            return
        records = np.empty((n, 1 + images[0].size), dtype=np.uint8)
        records[:, 0] = labels.astype(np.uint8)
        records[:, 1:] = images.reshape(n, -1)
        self._counts += np.bincount(labels.astype(np.int64), minlength=self.num_classes)
        self._hash.update(records.data)
        start = 0
        with self._writing():
            while start < n:
                if self._handle is None or self._shards[-1][1] >= self.shard_records:
                    self._open_shard()
                take = min(n - start, self.shard_records - self._shards[-1][1])
                self._handle.write(records[start:start + take].tobytes())
                self._shards[-1][1] += take
                start += take

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """An OSError is one StorageError line; the open shard is released (never reused)."""
        try:
            with os_errors(self.name):
                yield
        except BaseException:
            if self._handle is not None:
                with contextlib.suppress(OSError):
                    self._handle.close()
                self._handle = None
            raise

    def _open_shard(self) -> None:
        if self._handle is not None:
            self._handle.close()
        name = f"shard-{len(self._shards):05d}.bin"
        self._handle = open(self.root / name, "wb")  # noqa: SIM115 - closed in close()
        self._shards.append([name, 0])

    def close(self) -> DatasetInfo:
        """Close the last shard, write the manifest and return what was written."""
        with self._writing():
            if self._handle is not None:
                self._handle.close()
                self._handle = None
        info = DatasetInfo(
            image_shape=self.image_shape,  # type: ignore[arg-type]
            num_classes=self.num_classes,
            num_examples=int(sum(c for _, c in self._shards)),
            shards=tuple((name, int(count)) for name, count in self._shards),
            class_counts=tuple(int(c) for c in self._counts),
            digest=f"sha256:{self._hash.hexdigest()}",
        )
        self.write_manifest(info)
        return info

    def write_manifest(self, info: DatasetInfo) -> None:
        """Write (or rewrite) ``dataset.json`` for ``info``, whole (a temporary name first)."""
        manifest = json.dumps({"format": FORMAT, **dataclasses.asdict(info)}, indent=2)
        tmp = self.root / f".{MANIFEST}.partial"
        try:
            with os_errors(self.name):
                tmp.write_text(manifest)
                os.replace(tmp, self.root / MANIFEST)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def read_info(root: str) -> DatasetInfo:
    """Read a Dataset folder's manifest; InputError if it is not a tbpipe Dataset."""
    path = Path(root) / MANIFEST
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{root}: not a tbpipe Dataset (no readable {MANIFEST}); "
                         "pass the output of the preprocess step") from exc
    if raw.get("format") != FORMAT:
        raise InputError(f"{root}: dataset format {raw.get('format')!r}, expected {FORMAT}")
    return DatasetInfo(
        image_shape=tuple(raw["image_shape"]),
        num_classes=int(raw["num_classes"]),
        num_examples=int(raw["num_examples"]),
        shards=tuple((name, int(count)) for name, count in raw["shards"]),
        class_counts=tuple(raw["class_counts"]),
        digest=str(raw.get("digest", "")),
    )


def iter_shards(root: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images uint8 (n, H, W, C), labels int32)`` one shard at a time."""
    info = read_info(root)
    for path, count in zip(info.shard_paths(root), (c for _, c in info.shards), strict=True):
        records = np.fromfile(path, dtype=np.uint8)
        if records.size != count * info.record_bytes:
            raise InputError(f"{path}: {records.size} bytes, expected {count} records of "
                             f"{info.record_bytes}; the dataset is damaged, rerun preprocess")
        records = records.reshape(count, info.record_bytes)
        yield records[:, 1:].reshape(count, *info.image_shape), records[:, 0].astype(np.int32)


def load_arrays(root: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole dataset in memory: float32 images in [0, 1] and int32 labels."""
    parts = list(iter_shards(root))
    info = read_info(root)
    if not parts:
        return np.zeros((0, *info.image_shape), np.float32), np.zeros(0, np.int32)
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    return images, np.concatenate([p[1] for p in parts])
