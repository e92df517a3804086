"""Image folders for preprocess: one subfolder per class of PNG, JPEG, BMP or GIF files.

Layouts::

    data/cat/*.png  data/dog/*.jpg            classes cat, dog; preprocess splits
    data/train/cat/...  data/test/cat/...     the folder's own test split is kept

The class names are the folder names, sorted; label k is ``class_names[k]``. Every image is
converted to grayscale or RGB (``channels``; default 3 if any file is colour, else 1) and
resized to ``image_size`` HxW (default: the most common size, found from the file headers).
Files are decoded by a thread pool (Pillow releases the GIL while decoding), one chunk of
files at a time with the next chunk decoding while the current one is written, so memory
holds two chunks whatever the number of files. A file Pillow cannot read is counted
(``unreadable_files``) and skipped; only a folder with no readable image fails.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tbpipe.components.common.dataset import MAX_CLASSES
from tbpipe.components.common.errors import InputError
from tbpipe.components.preprocessing.idx import CHUNK_BYTES
from tbpipe.components.preprocessing.source import RawChunk, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
WORKERS = min(8, os.cpu_count() or 1)
UNREADABLE = "unreadable_files"


def _subfolders(folder: str) -> list[str]:
    """Names of the visible subfolders of ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _image_files(folder: str) -> list[str]:
    """Names of the image files (by suffix) directly in ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_file() and not e.name.startswith(".")
                      and e.name.lower().endswith(IMAGE_SUFFIXES))


def is_image_folder(folder: str) -> bool:
    """True for a folder with subfolders and no MNIST IDX files (those are read by idx.py)."""
    with os.scandir(folder) as entries:
        names = [(e.name, e.is_dir()) for e in entries if not e.name.startswith(".")]
    if any(name.startswith(("train-images", "train-labels")) for name, _ in names):
        return False
    return any(is_dir for _, is_dir in names)


def _class_files(folder: str) -> dict[str, list[str]]:
    """Class name -> sorted image paths, for the class folders of ``folder`` holding images."""
    found = {}
    for name in _subfolders(folder):
        files = _image_files(os.path.join(folder, name))
        if files:
            found[name] = [os.path.join(folder, name, f) for f in files]
    return found


def _is_split_layout(folder: str) -> bool:
    subs = _subfolders(folder)
    if "train" not in subs or "test" not in subs:
        return False
    train = os.path.join(folder, "train")
    return not _image_files(train) and bool(_class_files(train))


def _header(path: str) -> tuple[tuple[int, int], bool] | None:
    """((height, width), is colour) from the file's header, or None if Pillow cannot read it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
            if mode in ("P", "PA"):
                palette = np.asarray(image.getpalette() or [], np.int32)
                rgb = palette[:len(palette) - len(palette) % 3].reshape(-1, 3)
                colour = bool((rgb != rgb[:, :1]).any())
            else:
                colour = mode not in GRAY_MODES
            return (height, width), colour
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _decode(path: str, height: int, width: int, channels: int) -> np.ndarray | None:
    """The image as uint8 (height, width, channels), or None if Pillow cannot read it."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft(mode, (width, height))  # decode at a reduced scale when it can
            image = image.convert(mode)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(image, np.uint8).reshape(height, width, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _defaults(name: str, paths: list[str], size: tuple[int, int] | None,
              channels: int) -> tuple[tuple[int, int], int]:
    """Fill the most common size and the channels (3 if any file is colour) from headers."""
    sizes: Counter = Counter()
    colour = False
    with ThreadPoolExecutor(WORKERS) as pool:
        for header in pool.map(_header, paths, chunksize=64):
            if header is not None:
                sizes[header[0]] += 1
                colour = colour or header[1]
    if not sizes:
        raise InputError(f"{name}: none of the {len(paths)} image files could be read "
                         f"(e.g. {paths[0]}); check the files")
    if size is None:
        size, count = sizes.most_common(1)[0]
        print(f"preprocess: image size {size[0]}x{size[1]} (the most common, {count} of "
              f"{sum(sizes.values())} images); pass image_size HxW to choose", flush=True)
    if not channels:
        channels = 3 if colour else 1
        print(f"preprocess: {channels} channel{'s' if channels == 3 else ''} "
              f"({'a file is colour' if colour else 'every file is grayscale'}); "
              "pass channels 1 or 3 to choose", flush=True)
    return size, channels


def image_folder_source(name: str, folder: str, chunk_rows: int,
                        size: tuple[int, int] | None = None, channels: int = 0) -> Source:
    """Open an image folder (see the module doc) as a :class:`Source` of uint8 pixel rows."""
    if _is_split_layout(folder):
        parts = {split: _class_files(os.path.join(folder, split)) for split in ("train", "test")}
    else:
        parts = {"train": _class_files(folder)}
    class_names = tuple(sorted(set().union(*parts.values())))
    if not class_names:
        raise InputError(f"{name}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its "
                         "subfolders; give one subfolder of images per class")
    if len(class_names) < 2:
        raise InputError(f"{name}: one class folder ({class_names[0]!r}); classification "
                         "needs at least 2, one subfolder of images per class")
    if len(class_names) > MAX_CLASSES:
        raise InputError(f"{name}: {len(class_names)} class folders; at most {MAX_CLASSES}")
    labels = {cls: index for index, cls in enumerate(class_names)}
    files = [(path, labels[cls], None if split == "train" else "test")
             for split, classes in parts.items() for cls, paths in classes.items()
             for path in paths]
    if size is None or not channels:
        size, channels = _defaults(name, [f[0] for f in files], size, channels)
    height, width = size
    step = max(1, min(chunk_rows, CHUNK_BYTES // (height * width * channels)))
    counts = {UNREADABLE: 0}

    def decode_all(batch: list[tuple[str, int, str | None]], pool: ThreadPoolExecutor):  # noqa: ANN202
        return pool.map(lambda f: _decode(f[0], height, width, channels), batch)

    def chunks() -> Iterator[RawChunk]:
        counts[UNREADABLE] = 0
        batches = [files[i:i + step] for i in range(0, len(files), step)]
        readable, first_bad = 0, None
        with ThreadPoolExecutor(WORKERS) as pool:
            pending = decode_all(batches[0], pool) if batches else None
            for index, batch in enumerate(batches):
                images = list(pending)
                # Split boundaries inside a batch: one RawChunk per split.
                pending = (decode_all(batches[index + 1], pool)
                           if index + 1 < len(batches) else None)
                for split in dict.fromkeys(f[2] for f in batch):
                    kept = [(img, f[1]) for img, f in zip(images, batch, strict=True)
                            if f[2] == split and img is not None]
                    bad = [f[0] for img, f in zip(images, batch, strict=True)
                           if f[2] == split and img is None]
                    counts[UNREADABLE] += len(bad)
                    first_bad = first_bad or (bad[0] if bad else None)
                    if kept:
                        readable += len(kept)
                        pixels = np.stack([img for img, _ in kept]).reshape(len(kept), -1)
                        yield RawChunk(pixels, np.array([k for _, k in kept], np.int64), split)
        if counts[UNREADABLE]:
            print(f"preprocess: {counts[UNREADABLE]} of {len(files)} image files unreadable, "
                  f"skipped (e.g. {first_bad})", flush=True)
        if not readable:
            raise InputError(f"{name}: none of the {len(files)} image files could be read "
                             f"(e.g. {first_bad}); check the files")

    return Source(name, (height, width, channels), 255.0, chunks,
                  has_test_split="test" in parts, class_names=class_names, counts=counts)
