"""Image folders for preprocess: one subfolder per class of PNG, JPEG, BMP, GIF, TIFF or WebP.

Layouts::

    data/cat/*.png  data/dog/*.jpg            classes cat, dog; preprocess splits
    data/train/cat/...  data/test/cat/...     the folder's own test split is kept

Anything else is refused with one line, never guessed: a ``val/`` folder (preprocess splits
validation off ``train/``), ``test/`` without ``train/``, split folders next to class
folders, a folder inside a class folder (nested classes), a class folder without images, a
test class that ``train/`` lacks, a FIFO or device among the files, a class name with
control characters. Entries that are not images are skipped and counted (hidden entries,
broken links, other suffixes, files outside the class folders), so the summary says so.

The class names are the folder names, sorted; label k is ``class_names[k]``. Every image is
read as its file means it (:func:`~tbpipe.components.common.image_files.decode_image`, which
predict uses too) and converted to grayscale or RGB (``channels``; default 3 if any
file is colour, else 1), resized to ``image_size`` HxW (default: the most common size,
found from the file headers): 16-bit images are scaled to 8 bits (not clipped), EXIF
orientation is applied, transparency is composited onto black, CMYK becomes RGB, a
multi-frame file (animated GIF, TIFF pages) gives its first frame; each such conversion is
counted (``converted_*``). A file that cannot be read as an image (damaged, more than
``limits.MAX_IMAGE_PIXELS`` pixels, float or 32-bit pixels of unknown range) is skipped and
counted (``skipped_*``; ``unreadable_files`` for damaged ones); a class left without any
readable image fails the step. Files are decoded by a thread pool (Pillow releases the GIL
while decoding), one chunk of files at a time with the next chunk decoding while the
current one is written, so memory holds two chunks whatever the number of files.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.image_files import UNREADABLE, decode_image, image_header
from tbpipe.components.common.limits import MAX_CLASSES, MAX_IMAGE_PIXELS
from tbpipe.components.common.regular_files import check_regular
from tbpipe.components.preprocessing.idx import CHUNK_BYTES
from tbpipe.components.preprocessing.source import RawChunk, Source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
WORKERS = min(8, os.cpu_count() or 1)
SPLIT_FOLDERS = ("train", "test")
VAL_FOLDERS = ("val", "valid", "validation")


def _shown(name: str) -> str:
    """A file or folder name for an error line: quoted, control characters escaped."""
    return ascii(name) if not name.isprintable() else repr(name)


class _Listing:
    """What a folder holds: subfolders and files, hidden and odd entries counted, not read."""

    def __init__(self, folder: str, counts: Counter) -> None:
        self.folders: list[str] = []
        self.files: list[str] = []
        self.other: list[str] = []  # regular files without an image suffix
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                path = os.path.join(folder, entry.name)
                if entry.name.startswith("."):
                    counts["skipped_hidden"] += 1
                    continue
                try:
                    mode = os.stat(path).st_mode
                except OSError:
                    counts["skipped_broken_links"] += 1
                    continue
                if stat.S_ISDIR(mode):
                    self.folders.append(entry.name)
                elif not stat.S_ISREG(mode):
                    check_regular(path, path, folder_ok=False)  # one line: FIFO, device...
                elif entry.name.lower().endswith(IMAGE_SUFFIXES):
                    self.files.append(entry.name)
                else:
                    self.other.append(entry.name)


def is_image_folder(folder: str) -> bool:
    """True for a folder with subfolders and no MNIST IDX files (those are read by idx.py)."""
    with os.scandir(folder) as entries:
        names = [(e.name, e.is_dir()) for e in entries if not e.name.startswith(".")]
    if any(name.startswith(("train-images", "train-labels")) for name, _ in names):
        return False
    return any(is_dir for _, is_dir in names)


def _class_files(name: str, folder: str, classes: list[str], counts: Counter
                 ) -> dict[str, list[str]]:
    """Class name -> sorted image paths for the class folders ``classes`` of ``folder``."""
    found = {}
    for cls in classes:
        if not cls.isprintable():
            raise InputError(f"{name}: class folder {_shown(cls)} has control characters or "
                             "bytes that are not text in its name; rename it")
        listing = _Listing(os.path.join(folder, cls), counts)
        if listing.folders:
            raise InputError(f"{name}: class folder {_shown(cls)} holds a folder "
                             f"({_shown(listing.folders[0])}); images go directly in their "
                             "class folder, nested class folders are not read")
        counts["skipped_other_files"] += len(listing.other)
        found[cls] = [os.path.join(folder, cls, f) for f in listing.files]
    return found


def _layout(name: str, folder: str, counts: Counter) -> dict[str, dict[str, list[str]]]:
    """``{"train": {class: paths}, "test": {...}}`` (test only for a train/test layout)."""
    top = _Listing(folder, counts)
    counts["skipped_files_outside_classes"] += len(top.files) + len(top.other)
    splits = [f for f in top.folders if f.lower() in SPLIT_FOLDERS + VAL_FOLDERS]
    if not splits:
        return {"train": _class_files(name, folder, top.folders, counts)}
    if any(f.lower() in VAL_FOLDERS for f in splits):
        val = next(f for f in splits if f.lower() in VAL_FOLDERS)
        raise InputError(f"{name}: a {val}/ folder: preprocess takes validation from train/ "
                         "(val_fraction); move its class folders' images into train/, or "
                         "keep train/ and test/ only")
    if splits != top.folders:
        others = [f for f in top.folders if f not in splits]
        raise InputError(f"{name}: split folders ({', '.join(splits)}) next to other folders "
                         f"({', '.join(map(_shown, others[:3]))}); use train/ and test/ with "
                         "class folders inside, or class folders only")
    by_split: dict[str, str] = {}  # "train" -> the folder's own spelling (Train, TRAIN...)
    for split in splits:
        if split.lower() in by_split:
            raise InputError(f"{name}: both {by_split[split.lower()]}/ and {split}/; keep one")
        by_split[split.lower()] = split
    if "train" not in by_split:
        raise InputError(f"{name}: {splits[0]}/ without train/; put the training images in "
                         "train/CLASS/ next to test/CLASS/")
    parts = {}
    for split, spelled in by_split.items():
        inside = _Listing(os.path.join(folder, spelled), counts)
        if inside.files or not inside.folders:
            raise InputError(f"{name}: {spelled}/ holds {'images' if inside.files else 'no'} "
                             f"{'directly' if inside.files else 'class folders'}; put its "
                             f"images in {spelled}/CLASS/ folders, one per class")
        counts["skipped_files_outside_classes"] += len(inside.other)
        parts[split] = _class_files(name, os.path.join(folder, spelled), inside.folders, counts)
    extra = sorted(set(parts.get("test", {})) - set(parts["train"]))
    if extra:
        raise InputError(f"{name}: test/ has class {_shown(extra[0])} that train/ does not; "
                         "use the same class folders in both")
    return parts


def _defaults(name: str, paths: list[str], size: tuple[int, int] | None,
              channels: int) -> tuple[tuple[int, int], int]:
    """Fill the most common size and the channels (3 if any file is colour) from headers."""
    sizes: Counter = Counter()
    colour = False
    with ThreadPoolExecutor(WORKERS) as pool:
        for header in pool.map(image_header, paths, chunksize=64):
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
    """Open an image folder (see the module doc) as a :class:`Source` of uint8 pixel rows.

    ``Source.counts`` holds what was skipped (``skipped_*``, ``unreadable_files``) and
    converted (``converted_*``), filled in as the chunks are read.
    """
    listed: Counter = Counter()
    parts = _layout(name, folder, listed)
    class_names = tuple(sorted(set().union(*parts.values())))
    with_images = {cls for classes in parts.values() for cls, paths in classes.items() if paths}
    if not with_images:
        raise InputError(f"{name}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its "
                         "subfolders; give one subfolder of images per class")
    if len(class_names) < 2:
        raise InputError(f"{name}: one class folder ({class_names[0]!r}); classification "
                         "needs at least 2, one subfolder of images per class")
    empty = [cls for cls in class_names if cls not in with_images]
    if empty:
        raise InputError(f"{name}: class folder {_shown(empty[0])} has no image files "
                         f"({', '.join(IMAGE_SUFFIXES)}); add its images or remove the folder "
                         "(a class without images would be an output never trained)")
    if len(class_names) > MAX_CLASSES:
        raise InputError(f"{name}: {len(class_names)} class folders; at most {MAX_CLASSES}")
    labels = {cls: index for index, cls in enumerate(class_names)}
    files = [(path, labels[cls], None if split == "train" else "test")
             for split, classes in parts.items() for cls, paths in classes.items()
             for path in paths]
    if size is None or not channels:
        size, channels = _defaults(name, [f[0] for f in files], size, channels)
    height, width = size
    if height * width > MAX_IMAGE_PIXELS:
        raise InputError(f"{name}: images of {height}x{width} pixels are more than "
                         f"{MAX_IMAGE_PIXELS}; pass a smaller image_size HxW")
    step = max(1, min(chunk_rows, CHUNK_BYTES // (height * width * channels)))
    counts: dict[str, int] = {UNREADABLE: 0}

    def decode_all(batch: list[tuple[str, int, str | None]], pool: ThreadPoolExecutor):  # noqa: ANN202
        return pool.map(lambda f: decode_image(f[0], height, width, channels), batch)

    def chunks() -> Iterator[RawChunk]:
        counts.clear()
        counts.update({UNREADABLE: 0, **{k: v for k, v in sorted(listed.items()) if v}})
        batches = [files[i:i + step] for i in range(0, len(files), step)]
        per_class = np.zeros(len(class_names), np.int64)
        first_bad: dict[str, str] = {}
        with ThreadPoolExecutor(WORKERS) as pool:
            pending = decode_all(batches[0], pool) if batches else None
            for index, batch in enumerate(batches):
                decoded = list(pending)
                # Split boundaries inside a batch: one RawChunk per split.
                pending = (decode_all(batches[index + 1], pool)
                           if index + 1 < len(batches) else None)
                for (img, notes), (path, _, _) in zip(decoded, batch, strict=True):
                    for note in notes:
                        counts[note] = counts.get(note, 0) + 1
                        if img is None:
                            first_bad.setdefault(note, path)
                for split in dict.fromkeys(f[2] for f in batch):
                    kept = [(img, f[1]) for (img, _), f in zip(decoded, batch, strict=True)
                            if f[2] == split and img is not None]
                    if kept:
                        kept_labels = np.array([k for _, k in kept], np.int64)
                        per_class += np.bincount(kept_labels, minlength=len(class_names))
                        pixels = np.stack([img for img, _ in kept]).reshape(len(kept), -1)
                        yield RawChunk(pixels, kept_labels, split)
        skipped = {k: v for k, v in counts.items() if v and k in first_bad}
        if skipped:
            print(f"preprocess: skipped {sum(skipped.values())} of {len(files)} image files ("
                  + ", ".join(f"{k.removeprefix('skipped_').replace('_', ' ')} {v}, e.g. "
                              f"{first_bad[k]}" for k, v in skipped.items()) + ")", flush=True)
        if not per_class.any():
            example = next(iter(first_bad.values()), files[0][0])
            raise InputError(f"{name}: none of the {len(files)} image files could be read "
                             f"(e.g. {example}); check the files")
        lost = [cls for cls, n in zip(class_names, per_class, strict=True) if not n]
        if lost:
            raise InputError(f"{name}: class {_shown(lost[0])} has no readable image (all "
                             f"its files were skipped: {', '.join(sorted(skipped))}); fix "
                             "its files or remove the folder")

    return Source(name, (height, width, channels), 255.0, chunks,
                  has_test_split="test" in parts, class_names=class_names, counts=counts)
