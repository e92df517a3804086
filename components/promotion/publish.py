"""The production folder (``--promote-to``): replaced whole, with its ``promotion.json``.

The folder holds the promoted Model (``model.keras``, ``model.json``, ``saved_model/``) and
``promotion.json`` (the current promotion and the history of every one before it, oldest
first), and both change in one swap, so the record always describes the model beside it.

Locally the swap is two renames: the new version is written complete to the sibling
``.{name}.partial``; then ``{name}`` becomes ``.{name}.previous`` and ``.{name}.partial``
becomes ``{name}``; then the previous version is deleted. A crash while copying leaves
``{name}`` untouched; a crash between the renames leaves the previous version whole in
``.{name}.previous``, which the next promotion (or baseline read) puts back first
(:func:`recover`).

An object store (gs://) has no rename, so the previous version is kept complete until the
new one is: (1) the new version is uploaded whole to the sibling prefix ``.{name}.partial/``;
(2) the current version is copied to ``.{name}.previous/`` and then marked complete
(``.{name}.previous/.complete``); (3) the new objects are copied over ``{name}/``
(``promotion.json`` last) and the objects the new version lacks are deleted; (4) the mark,
the copy and the staging prefix are deleted. A crash in (1)-(2) leaves ``{name}/``
untouched; a crash in (3) leaves the complete previous version in ``.{name}.previous/``,
which :func:`recover` copies back before anything else reads or promotes (a crash after
(3) but before the mark is deleted also rolls back: production stays the previous model,
with its own record). One promotion to one folder at a time: tbpipe does not lock it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError, os_errors
from tbpipe.components.common.model_format import META_FILE

RECORD_FILE = "promotion.json"
RECORD_FORMAT = "tbpipe.promotion.v1"
_COMPLETE = ".complete"


def _siblings(promote_to: str) -> tuple[str, str]:
    """``(.{name}.partial, .{name}.previous)`` beside ``promote_to``."""
    trimmed = promote_to.rstrip("/")
    if not storage.is_remote(trimmed):
        trimmed = os.path.abspath(trimmed)
    parent, _, name = trimmed.rpartition("/")
    if not name or (storage.is_remote(trimmed) and parent.count("/") < 2):
        raise InputError(f"{promote_to}: promote to a folder below the bucket or disk root, "
                         "e.g. gs://BUCKET/models/digits")
    return f"{parent}/.{name}.partial", f"{parent}/.{name}.previous"


def check_target(promote_to: str) -> None:
    """InputError unless ``promote_to`` can hold a production Model folder.

    It must be a folder (not a ``.keras`` file) that is new, empty, or holds a tbpipe Model:
    tbpipe never replaces files it did not put there.
    """
    if promote_to.rstrip("/").endswith(".keras"):
        raise InputError(f"{promote_to}: promote to a folder (it receives a Model folder), "
                         "not a .keras file")
    _siblings(promote_to)
    if not storage.is_remote(promote_to) and os.path.isfile(promote_to):
        raise InputError(f"{promote_to}: is a file; promote to a folder")
    if storage.exists(promote_to) and storage.list_files(promote_to) \
            and not holds_model(promote_to):
        raise InputError(f"{promote_to}: holds files but no tbpipe Model ({META_FILE}); "
                         "promote to a new or empty folder, or to one tbpipe promoted to")


def holds_model(promote_to: str) -> bool:
    """Whether ``promote_to`` holds a Model folder (its ``model.json``)."""
    return storage.exists(storage.join(promote_to, META_FILE))


def read_record(promote_to: str) -> dict:
    """``promotion.json`` of ``promote_to``; an empty record where there is none."""
    uri = storage.join(promote_to, RECORD_FILE)
    if not storage.exists(uri):
        return {"format": RECORD_FORMAT, "current": None, "history": []}
    try:
        record = json.loads(storage.read_bytes(uri))
    except ValueError as exc:
        raise InputError(f"{uri}: not a promotion record (not JSON); restore it or promote "
                         "to another folder") from exc
    if not isinstance(record, dict) or not isinstance(record.get("history"), list):
        raise InputError(f"{uri}: not a promotion record (no history list); restore it or "
                         "promote to another folder")
    return record


def recover(promote_to: str) -> str:
    """Finish or roll back a swap a crash interrupted; what it did ("" when nothing).

    Locally: ``.{name}.previous`` without ``{name}`` is put back; beside a complete
    ``{name}`` it is deleted. gs://: a complete ``.{name}.previous/`` is copied back over
    ``{name}/``. Staging left by a crash is deleted in both cases.
    """
    staging, previous = _siblings(promote_to)
    done = ""
    if storage.is_remote(promote_to):
        if storage.exists(storage.join(previous, _COMPLETE)):
            _replace_objects(previous, promote_to)
            storage.remove(storage.join(previous, _COMPLETE))
            done = f"rolled back an interrupted promotion: {promote_to} holds its previous model"
        storage.remove(previous)
    elif os.path.isdir(previous):
        if os.path.exists(promote_to):
            with os_errors(previous, "cannot remove"):
                shutil.rmtree(previous)
        else:
            with os_errors(promote_to):
                os.replace(previous, promote_to)
            done = f"put back {promote_to}: a promotion was interrupted between its renames"
    storage.remove(staging)
    return done


def publish(model_uri: str, promote_to: str, entry: Mapping[str, object]) -> dict:
    """Make the Model folder at ``model_uri`` the production model at ``promote_to``.

    ``entry`` (what, when, from which run, with which metrics) becomes ``promotion.json``'s
    ``current`` and is appended to its ``history``, in the same swap as the model.

    Returns:
        The record written.

    Raises:
        StorageError: a copy or the swap failed; ``promote_to`` holds the model it held
            before, whole (see the module's docstring).

    """
    recover(promote_to)
    record = read_record(promote_to)
    record = {"format": RECORD_FORMAT, "current": dict(entry),
              "history": [*record["history"], dict(entry)]}
    data = json.dumps(record, indent=2, sort_keys=True).encode()
    if storage.is_remote(promote_to):
        _publish_remote(model_uri, promote_to, data)
    else:
        _publish_local(model_uri, promote_to, data)
    return record


def _publish_local(model_uri: str, promote_to: str, record: bytes) -> None:
    staging, previous = _siblings(promote_to)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with storage.local_input(model_uri) as source:
            shutil.copytree(source, staging)
            Path(staging, RECORD_FILE).write_bytes(record)
    except OSError as exc:  # shutil.Error too: the first file that failed says why
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"{promote_to}: cannot copy the new model ({_cause(exc)}); the "
                           "production model there is unchanged") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    with os_errors(promote_to):
        if os.path.exists(promote_to):
            os.replace(promote_to, previous)
        os.replace(staging, promote_to)
    shutil.rmtree(previous, ignore_errors=True)


def _publish_remote(model_uri: str, promote_to: str, record: bytes) -> None:
    staging, previous = _siblings(promote_to)
    storage.remove(staging)
    for rel in storage.list_files(model_uri):  # (1) the new version, complete, staged
        storage.write_bytes(storage.join(staging, rel),
                            storage.read_bytes(storage.join(model_uri, rel)))
    storage.write_bytes(storage.join(staging, RECORD_FILE), record)
    storage.remove(previous)
    if storage.exists(promote_to):  # (2) the current version, complete, kept aside
        _copy_objects(promote_to, previous)
        storage.write_bytes(storage.join(previous, _COMPLETE), b"")
    _replace_objects(staging, promote_to)  # (3) the swap
    storage.remove(storage.join(previous, _COMPLETE))  # (4) done: clean up
    storage.remove(previous)
    storage.remove(staging)


def _copy_objects(source: str, target: str) -> list[str]:
    """Copy every object under ``source`` to ``target``, ``promotion.json`` last."""
    names = [n for n in storage.list_files(source) if n != _COMPLETE]
    names.sort(key=lambda n: n == RECORD_FILE)
    for rel in names:
        storage.write_bytes(storage.join(target, rel), storage.read_bytes(
            storage.join(source, rel)))
    return names


def _replace_objects(source: str, target: str) -> None:
    """Make ``target`` hold what ``source`` holds: copy over, then delete the rest."""
    keep = set(_copy_objects(source, target))
    for rel in storage.list_files(target):
        if rel not in keep:
            storage.remove(storage.join(target, rel))


def _cause(exc: OSError) -> str:
    """The first reason in an OSError, or in a ``shutil.Error``'s list of failed files."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list):
        return str(exc.args[0][0][-1])[:200]
    return exc.strerror or str(exc)[:200] or type(exc).__name__
