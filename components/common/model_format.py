"""The Model artifact: a folder holding ``model.keras`` and ``model.json``, written whole.

Every step that reads or writes a model (train, finetune, evaluate, select) goes through
here, so the format has one definition and one set of error lines.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tbpipe.components.common.errors import InputError, StorageError, os_errors
from tbpipe.components.common.limits import MAX_CLASSES, MAX_METADATA_BYTES
from tbpipe.components.common.regular_files import check_regular
from tbpipe.components.common.storage import (
    atomic_dir,
    download_file,
    is_remote,
    join,
    read_bounded_uri,
    upload_file,
    write_bytes,
)

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"
META_FILE = "model.json"
MODEL_FORMAT = "tbpipe.model.v1"
_HINT = "pass the model output of the train step"


def save_model_folder(model: keras.Model, uri: str, meta: Mapping[str, object]) -> None:
    """Write the Model folder at ``uri`` whole or not at all (``model.json`` last on gs://).

    Raises:
        StorageError: ``uri`` (or the local staging folder) cannot be written: one line
            naming ``uri`` and the cause; a Model folder there before is left whole.

    """
    content = {"format": MODEL_FORMAT, **meta}
    if not is_remote(uri):
        with atomic_dir(uri) as tmp, os_errors(uri):
            model.save(os.path.join(tmp, MODEL_FILE))
            Path(tmp, META_FILE).write_text(json.dumps(content, indent=2))
        return
    with os_errors(uri), tempfile.TemporaryDirectory(prefix="tbpipe-model-") as tmp:
        local = os.path.join(tmp, MODEL_FILE)
        model.save(local)
        upload_file(local, join(uri, MODEL_FILE))
    write_bytes(join(uri, META_FILE), json.dumps(content, indent=2).encode())


def _read_meta_bytes(uri: str) -> bytes:
    """``model.json``'s bytes: a regular file of at most MAX_METADATA_BYTES (local or remote)."""
    meta_uri = join(uri, META_FILE)
    if not is_remote(uri) and not os.path.lexists(meta_uri):
        raise StorageError(f"{meta_uri}: no such file")
    return read_bounded_uri(meta_uri, MAX_METADATA_BYTES, META_FILE)


def read_model_meta(uri: str) -> dict:
    """Read a Model folder's ``model.json``; InputError if ``uri`` is not a tbpipe Model.

    The file is bounded (``limits.MAX_METADATA_BYTES``, a regular file: a FIFO is refused
    before it is opened), and so is the class count it claims (``limits.MAX_CLASSES``).
    """
    try:
        meta = json.loads(_read_meta_bytes(uri))
    except (StorageError, ValueError, RecursionError) as exc:
        raise InputError(f"{uri}: not a tbpipe Model (no readable {META_FILE}); {_HINT}") from exc
    if not isinstance(meta, dict) or not {"image_shape", "num_classes"} <= set(meta):
        raise InputError(f"{uri}: not a tbpipe Model ({META_FILE} lacks image_shape/num_classes);"
                         f" {_HINT}")
    classes = meta["num_classes"]
    if isinstance(classes, bool) or not isinstance(classes, int) \
            or not 1 <= classes <= MAX_CLASSES:
        raise InputError(f"{uri}: {META_FILE} says num_classes {str(classes)[:40]}, not 1.."
                         f"{MAX_CLASSES}; {_HINT}")
    if meta.get("format", MODEL_FORMAT) != MODEL_FORMAT:
        raise InputError(f"{uri}: not a tbpipe Model (format {meta['format']!r}, expected "
                         f"{MODEL_FORMAT}); {_HINT}")
    return meta


def class_names(meta: dict, num_classes: int) -> list[str]:
    """The class names ``model.json`` (or a manifest) records (``class_names``), else ``str(k)``."""
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if isinstance(names, list | tuple) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(k) for k in range(num_classes)]


def load_keras_file(uri: str, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` file (local or gs://); InputError naming it if it cannot be read.

    A local path must be a regular file, checked before Keras is imported or anything is
    opened: a FIFO would block the loader.
    """
    if not is_remote(uri):
        try:
            check_regular(uri, uri, folder_ok=False)
        except InputError as exc:
            reason = str(exc).removeprefix(f"{uri}: ").split(";")[0]
            raise InputError(f"{uri}: cannot load the Keras model ({reason}); rerun the "
                             "step that wrote it") from exc
    from tbpipe.components.common.keras_import import import_keras

    keras = import_keras()
    with tempfile.TemporaryDirectory(prefix="tbpipe-load-") as tmp:
        local = uri
        if is_remote(uri):
            local = os.path.join(tmp, MODEL_FILE)
            download_file(uri, local)
        try:
            return keras.models.load_model(local, compile=compile)
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InputError(f"{uri}: cannot load the Keras model ({first}); "
                             "rerun the step that wrote it") from exc


def load_model_folder(uri: str, compile: bool = True) -> tuple[keras.Model, dict]:
    """Load a Model folder: the Keras model and its metadata."""
    meta = read_model_meta(uri)
    return load_keras_file(join(uri, MODEL_FILE), compile=compile), meta


def check_class_names(uri: str, model_names: object, data_names: Sequence[str],
                      hint: str) -> None:
    """InputError unless the model's class names (``model.json``) are the data's, in order.

    A model without recorded names (a ``.keras`` file, an old Model folder) or data without
    names passes: there is nothing to compare. Counts are checked apart. The line names the
    first class that differs and both lists (their first names, and their length).
    """
    if not data_names or not isinstance(model_names, list | tuple):
        return
    model_names = [str(n) for n in model_names]
    data_names = [str(n) for n in data_names]
    if model_names == data_names or len(model_names) != len(data_names):
        return
    k = next(i for i, (a, b) in enumerate(zip(model_names, data_names, strict=True)) if a != b)
    same_set = sorted(model_names) == sorted(data_names)
    raise InputError(f"{uri}: class {k} is {model_names[k][:60]!r} in the model but "
                     f"{data_names[k][:60]!r} in the data"
                     + (" (the same names in another order)" if same_set else "")
                     + f" (model: {_names_list(model_names)}, data: {_names_list(data_names)})"
                     + f"; the model's answers would be read as the wrong classes, {hint}")


def _names_list(names: Sequence[str], most: int = 8) -> str:
    """``[a, b, ...]`` for an error line: the first ``most`` names (cut), and the count."""
    shown = ", ".join(repr(n[:30]) for n in names[:most])
    return f"[{shown}]" if len(names) <= most else f"[{shown}, ... {len(names)} in all]"


def check_model_fits(uri: str, model: keras.Model, image_shape, num_classes: int,
                     hint: str) -> None:
    """InputError (one line naming ``uri``) unless ``model`` fits the data: the one check.

    ``model`` must take images of ``image_shape`` and output ``num_classes`` scores.

    A ``None`` side in the model's input (any size) fits any size.
    """
    shape = tuple(int(side) for side in image_shape)
    try:
        takes, gives = tuple(model.input_shape[1:]), model.output_shape[-1]
    except (AttributeError, TypeError, ValueError, IndexError):
        takes, gives = None, None
    fits = (takes is not None and len(takes) == len(shape)
            and all(side is None or side == want for side, want in zip(takes, shape, strict=True))
            and gives == num_classes)
    if not fits:
        raise InputError(f"{uri}: model takes {takes} images with {gives} classes, the data "
                         f"has {shape} with {num_classes}; {hint}")


def load_fitting_model(uri: str, image_shape, num_classes: int, hint: str,
                       class_names: Sequence[str] = ()) -> tuple[keras.Model, dict]:
    """Load a ``.keras`` file or a Model folder, uncompiled, checked against the data.

    A Model folder's ``model.json`` is checked before its (larger) ``model.keras`` loads:
    shape, class count and, given the data's ``class_names``, the names the model was
    trained with (:func:`check_class_names`). Returns the model and the folder's metadata
    (empty for a ``.keras`` file).
    """
    if uri.endswith(".keras"):
        model, meta = load_keras_file(uri, compile=False), {}
    else:
        meta = read_model_meta(uri)
        shape, classes = tuple(meta.get("image_shape", ())), meta.get("num_classes")
        if (shape, classes) != (tuple(image_shape), num_classes):
            raise InputError(f"{uri}: model takes {shape} images with {classes} classes, the "
                             f"data has {tuple(image_shape)} with {num_classes}; {hint}")
        check_class_names(uri, meta.get("class_names"), class_names, hint)
        model = load_keras_file(join(uri, MODEL_FILE), compile=False)
        if tuple(model.input_shape[1:]) != shape or model.output_shape[-1] != classes:
            raise InputError(f"{uri}: model.keras takes {model.input_shape[1:]} -> "
                             f"{model.output_shape[-1]} classes, model.json says {shape} -> "
                             f"{classes}; rerun the train step")
    check_model_fits(uri, model, image_shape, num_classes, hint)
    return model, meta
