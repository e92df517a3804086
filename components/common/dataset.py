"""The tbpipe Dataset format: sharded fixed-length binary records plus a JSON manifest.

A Dataset artifact is a folder::

    dataset.json          manifest: image shape, classes (and their names), label width,
                          shard files and counts
    shard-00000.bin       records, each a label (``label_bytes``: 1 byte, or 2 bytes
    shard-00001.bin       little-endian when there are more than 256 classes) followed by
                          H*W*C pixel bytes (pixel byte b means the value b / 255 in [0, 1])

A manifest without ``label_bytes`` (written before labels could widen) reads as 1 byte, one
without ``class_names`` as the names ``"0".."k-1"``.

Fixed-length records stream straight into ``tf.data.FixedLengthRecordDataset`` (native,
parallel reads, no Python per sample), and any number of shards can be written one chunk at
a time, so a table larger than memory goes through. numpy reads them with ``np.fromfile``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tbpipe.components.common.errors import InputError, os_errors
from tbpipe.components.common.limits import MAX_METADATA_BYTES
from tbpipe.components.common.regular_files import read_bounded

MANIFEST = "dataset.json"
FORMAT = "tbpipe.records.v1"
BYTE_CLASSES = 256  # classes a 1-byte label holds
MAX_CLASSES = 65_536  # classes a 2-byte label holds
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
    class_names: tuple[str, ...] = ()  # one name per class; default "0".."k-1"
    label_bytes: int = 1  # 1, or 2 (little-endian uint16) for more than 256 classes

    def __post_init__(self) -> None:
        """Fill the default class names ``"0".."k-1"`` and check their number."""
        if not self.class_names:
            object.__setattr__(self, "class_names",
                               tuple(str(k) for k in range(self.num_classes)))
        else:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if len(self.class_names) != self.num_classes:
            raise InputError(f"{len(self.class_names)} class names for {self.num_classes} "
                             "classes; the dataset manifest is damaged, rerun preprocess")
        if self.label_bytes not in (1, 2):
            raise InputError(f"label_bytes {self.label_bytes}: the record format holds 1 or 2")

    @property
    def record_bytes(self) -> int:
        """Bytes per record: the label bytes plus the pixels."""
        h, w, c = self.image_shape
        return self.label_bytes + h * w * c

    def shard_paths(self, root: str) -> list[str]:
        """Absolute paths of the shard files under ``root``."""
        return [os.path.join(root, name) for name, _ in self.shards]


def label_width(num_classes: int) -> int:
    """Bytes a label takes for ``num_classes`` classes: 1 up to 256, else 2."""
    return 1 if num_classes <= BYTE_CLASSES else 2


def decode_labels(records: np.ndarray, label_bytes: int) -> np.ndarray:
    """The int32 labels of records ``(n, record_bytes)`` uint8 (little-endian when 2 bytes)."""
    if label_bytes == 1:
        return records[:, 0].astype(np.int32)
    return records[:, 0].astype(np.int32) | (records[:, 1].astype(np.int32) << 8)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Quantize images with values in [0, 1] to bytes (b = round(255 * v))."""
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


class DatasetWriter:
    """Writes records chunk by chunk into shards of at most ``shard_records`` records.

    A failed write (disk full, read-only file system, a file where the folder should be) is
    one StorageError line naming ``name`` (the Dataset's own path; ``root`` may be a
    temporary folder, see :func:`~tbpipe.components.common.storage.atomic_dir`) and the
    cause. The manifest is written last, whole, so a failed writer leaves no Dataset.

    Labels take ``label_bytes`` bytes: by default 1 for up to 256 classes, else 2. A writer
    started with 1 byte that meets a label above 255 widens what it wrote to 2 bytes (once;
    preprocess of a table only knows its classes at the end).
    """

    def __init__(self, root: str, image_shape: tuple[int, int, int], num_classes: int,
                 shard_records: int = DEFAULT_SHARD_RECORDS, name: str | None = None,
                 label_bytes: int | None = None) -> None:
        if not 1 <= num_classes <= MAX_CLASSES:
            raise InputError(f"{num_classes} classes: the record format holds 1 to {MAX_CLASSES}")
        self.label_bytes = label_bytes or label_width(num_classes)
        if self.label_bytes not in (1, 2):
            raise InputError(f"label_bytes {self.label_bytes}: the record format holds 1 or 2")
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
        self.class_names: tuple[str, ...] = ()  # set before close() to name the classes
        self._hash = hashlib.sha256(json.dumps(list(self.image_shape)).encode())

    def write(self, images: np.ndarray, labels: np.ndarray) -> None:
        """Append images (uint8, or floats in [0, 1]) shaped (n, H, W, C) and their labels."""
        if images.dtype != np.uint8:
            images = to_uint8(images)
        n = len(labels)
        if not n:
            return
        labels = np.asarray(labels).astype(np.int64)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise InputError(f"{self.name}: label {int(labels.max())} outside 0.."
                             f"{self.num_classes - 1}")
        if self.label_bytes == 1 and labels.max() >= BYTE_CLASSES:
            self._widen()
        width = self.label_bytes
        records = np.empty((n, width + images[0].size), dtype=np.uint8)
        records[:, 0] = labels & 0xFF
        if width == 2:
            records[:, 1] = labels >> 8
        records[:, width:] = images.reshape(n, -1)
        self._counts += np.bincount(labels, minlength=self.num_classes)
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

    def _widen(self) -> None:
        """Rewrite the shards written so far with 2-byte labels; the digest follows."""
        with self._writing():
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            self._hash = hashlib.sha256(json.dumps(list(self.image_shape)).encode())
            old = 1 + math.prod(self.image_shape)
            for name, count in self._shards:
                path = self.root / name
                records = np.fromfile(path, dtype=np.uint8).reshape(count, old)
                wide = np.zeros((count, old + 1), np.uint8)
                wide[:, 0] = records[:, 0]
                wide[:, 2:] = records[:, 1:]
                self._hash.update(wide.data)
                tmp = path.with_name(f".{name}.partial")
                wide.tofile(tmp)
                os.replace(tmp, path)
            if self._shards:
                self._handle = open(self.root / self._shards[-1][0], "ab")  # noqa: SIM115
        self.label_bytes = 2

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
            class_names=self.class_names,
            label_bytes=self.label_bytes,
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
    try:  # a regular file of at most MAX_METADATA_BYTES (a FIFO or a huge file: one line)
        raw = json.loads(read_bounded(str(path), str(path), MAX_METADATA_BYTES, MANIFEST)
                         if path.exists() else path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
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
        class_names=tuple(raw.get("class_names") or ()),
        label_bytes=int(raw.get("label_bytes", 1)),
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
        yield (records[:, info.label_bytes:].reshape(count, *info.image_shape),
               decode_labels(records, info.label_bytes))


def load_arrays(root: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole dataset in memory: float32 images in [0, 1] and int32 labels."""
    parts = list(iter_shards(root))
    info = read_info(root)
    if not parts:
        return np.zeros((0, *info.image_shape), np.float32), np.zeros(0, np.int32)
    images = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    return images, np.concatenate([p[1] for p in parts])
