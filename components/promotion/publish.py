"""The production folder (``--promote-to``): immutable versions and one pointer written last.

Layout, the same on local disk, gs:// and s3://::

    {promote_to}/promotion.json      the pointer and the history (format tbpipe.promotion.v2)
    {promote_to}/v1/                 a promoted Model folder: model.keras, model.json,
    {promote_to}/v2/ ...                 saved_model/1/ (what KServe's storageUri names)

``promotion.json``'s ``current`` names the production version (``"version": "v2"``) and
every file tbpipe wrote for it (``files``); ``history`` holds every promotion, oldest first.
A promotion (:func:`publish`), under the lock:

1. creates ``vN/.tbpipe-partial`` (N: one above any ``v<number>`` already there), the mark of
   a version being written;
2. writes the Model folder's files into ``vN/`` (each file one atomic write or upload);
3. deletes the mark;
4. writes ``promotion.json`` (one atomic write: a rename locally, one object upload on an
   object store), naming ``vN`` and appending the entry to the history.

Until step 4 the pointer names the previous version, which nothing touched; after it, the
new one, complete. A crash at any point therefore leaves production whole and serving one
version, never a mix. A version left with its mark by a crash is tbpipe's own unfinished
work: the next promotion deletes it first (:func:`recover`). Versions are never modified or
deleted once complete (issue 24's registry moves an alias over the same folders).

**The served path follows the alias** ``champion``. Locally (a folder, a volume a model
server mounts, e.g. KServe's ``pvc://``) it is the symlink ``{promote_to}/serving`` ->
``vN/saved_model`` (relative, so it resolves wherever the volume is mounted), re-pointed by
every command that moves ``champion`` (:func:`publish`, :func:`move_alias`) right after the
pointer, under the lock, atomically (:func:`link_serving`: a new link beside it renamed over
it). It only ever names a complete version; a crash between the pointer and the link leaves
it on the previous champion (whole) until the next promotion or alias move, which re-links
first. Object stores have no links: the served path there is the InferenceService's
``storageUri`` (``inference_service.py``), moved by ``tbpipe models ... --inference-service``.

What tbpipe owns in ``promote_to``: ``promotion.json``, the ``vN/`` it created and, locally,
the link ``serving``. Anything else a user keeps there survives every promotion. A target
tbpipe cannot own is refused with one line (:func:`check_target`): a file, a
``promotion.json`` that is not tbpipe's, a ``serving`` that is not tbpipe's link, ``/``,
the log root, a place it cannot write. A symlinked local target is resolved and the
promotion goes to the folder it points to (and says so); a dangling one is refused.

Promotions to one target are serialized by a lock beside it, ``.{name}.lock``: locally an
``fcntl.flock`` on that file (the kernel drops it if the holder dies); on an object store a
lease object created only if absent (``storage.create_bytes``), holding its expiry
(:data:`LEASE_S`), deleted by its holder when done; an expired lease (its holder crashed) is
taken over by exactly one waiter (it first creates ``.{name}.lock.takeover-<digest>``,
create-if-absent). A waiter gives up after :data:`LOCK_WAIT_S` with one line naming the
holder.

A production folder of tbpipe's first layout (the Model folder's files beside a
``tbpipe.promotion.v1`` record) is read as the current version until the first promotion in
this layout; its files are left where they are (a deployment may still serve them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError, os_errors
from tbpipe.components.common.limits import MAX_METADATA_BYTES, MAX_RECORD_BYTES
from tbpipe.components.common.model_format import META_FILE

RECORD_FILE = "promotion.json"
BLESSING_FILE = "blessing.json"  # in a version: the gate's blessing of it
VERSION_FILE = "version.json"  # in a version: its registry entry (run, data, metrics, parent)
CHAMPION = "champion"  # the alias production serves
RECORD_FORMAT = "tbpipe.promotion.v2"
LEGACY_FORMAT = "tbpipe.promotion.v1"
PARTIAL_MARK = ".tbpipe-partial"
SERVING_LINK = "serving"  # locally: the symlink to the champion's SavedModel folder
SAVED_MODEL = "saved_model"  # in a version: what a model server loads (common/serving.py)
LEASE_S = 3600.0  # an object-store lease's life: a crashed holder blocks others this long
LOCK_WAIT_S = 600.0  # how long a promotion waits for another one to the same target
_POLL_S = 0.5
_VERSION = re.compile(r"^v([1-9][0-9]{0,8})\Z")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,39}\Z")
_LINKED = re.compile(r"^v[1-9][0-9]{0,8}/saved_model\Z")  # what tbpipe's serving link holds


# ---- where: the target, its lock, what it holds ----------------------------------------

def resolve_target(promote_to: str) -> tuple[str, str]:
    """The target tbpipe writes to, and a note when it differs from ``promote_to``.

    gs:// and s3:// are taken as they are (trailing ``/`` dropped). A local path is made
    absolute; a symlink (to a folder) is resolved, so that two names of one folder share its
    lock: the note says so. A symlink to nowhere is refused.
    """
    trimmed = promote_to.rstrip("/") or promote_to
    if storage.is_remote(trimmed):
        return trimmed, ""
    absolute = os.path.abspath(trimmed)
    real = os.path.realpath(absolute)
    if real == absolute:
        return absolute, ""
    if os.path.islink(absolute) and not os.path.exists(real):
        raise InputError(f"{promote_to}: a symlink to {real}, which does not exist; create "
                         "that folder or promote to a real folder")
    return real, f"{promote_to} leads through a symlink: promoting into {real}"


def lock_uri(target: str) -> str:
    """The lock beside ``target`` (resolved): ``{parent}/.{name}.lock``."""
    parent, _, name = target.rpartition("/")
    return f"{parent}/.{name}.lock"


def check_target(promote_to: str, log_root: str = "") -> str:
    """InputError unless tbpipe can own ``promote_to``; the resolved target.

    Refused, with one line saying why: a ``.keras`` name or a file (a folder is needed), the
    disk or bucket root, the log root or a folder inside it, a place that cannot be written,
    a symlink to nowhere, and a folder whose ``promotion.json`` is not tbpipe's (or is not
    a file). Other files in the folder are fine: tbpipe never touches them.
    """
    if promote_to.rstrip("/").endswith(".keras"):
        raise InputError(f"{promote_to}: promote to a folder (it receives a Model folder), "
                         "not a .keras file")
    target, _ = resolve_target(promote_to)
    if storage.is_remote(target):
        if target.split("://", 1)[1].count("/") < 1:
            raise InputError(f"{promote_to}: promote to a folder below the bucket root, "
                             "e.g. gs://BUCKET/models/digits")
    else:
        _check_local(promote_to, target)
    if log_root and _inside(target, log_root):
        raise InputError(f"{promote_to}: is the log root {log_root} or inside it; TensorBoard "
                         "reads that tree: promote to a folder outside it")
    record_uri = storage.join(target, RECORD_FILE)
    if not storage.is_remote(target) and os.path.lexists(record_uri) \
            and (os.path.islink(record_uri) or not os.path.isfile(record_uri)):
        raise InputError(f"{record_uri}: not a file tbpipe wrote (a symlink or a folder); "
                         "move it away or promote to another folder")
    read_record(target)  # a promotion.json that is not tbpipe's is refused here
    return target


def _check_local(promote_to: str, target: str) -> None:
    if target == os.path.sep or os.path.dirname(target) == target:
        raise InputError(f"{promote_to}: the disk root; promote to a folder of its own, e.g. "
                         "./production")
    if os.path.isfile(target):
        raise InputError(f"{promote_to}: is a file; promote to a folder")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise InputError(f"{promote_to}: not a folder; promote to a folder")
    link = os.path.join(target, SERVING_LINK)
    if os.path.lexists(link) and not (os.path.islink(link)
                                      and _LINKED.match(os.readlink(link))):
        raise InputError(f"{link}: not tbpipe's link to the champion (tbpipe keeps one "
                         f"there); move it away or promote to another folder")
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InputError(f"{promote_to}: {existing} is a file, not a folder; promote to a "
                         "folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{promote_to}: cannot write in {existing} (permission denied); "
                         "promote to a folder you can write")
    parent = os.path.dirname(target)
    if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{promote_to}: cannot write its lock in {parent} (permission "
                         "denied); promote to a folder whose parent you can write")


def _inside(target: str, root: str) -> bool:
    """Whether ``target`` is ``root`` or below it (local paths resolved)."""
    if storage.is_remote(root) != storage.is_remote(target):
        return False
    if not storage.is_remote(root):
        root = os.path.realpath(os.path.abspath(root))
    root = root.rstrip("/")
    return target == root or target.startswith(root + "/")


def read_record(target: str) -> dict:
    """``promotion.json`` of ``target``: the pointer and the history; empty where none.

    A record of the first layout (``tbpipe.promotion.v1``) reads with ``current`` pointing
    at the folder itself (``"version": ""``).

    Raises:
        InputError: a ``promotion.json`` that is not a tbpipe record.

    """
    uri = storage.join(target, RECORD_FILE)
    if not storage.exists(uri):
        return {"format": RECORD_FORMAT, "current": None, "history": [], "aliases": {}}
    hint = "it is not tbpipe's: move it away or promote to another folder"
    try:
        record = json.loads(storage.read_bounded_uri(uri, MAX_RECORD_BYTES, "promotion record"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{uri}: not a promotion record (not JSON); {hint}") from exc
    if not isinstance(record, dict) or record.get("format") not in (RECORD_FORMAT,
                                                                      LEGACY_FORMAT) \
            or not isinstance(record.get("history"), list):
        raise InputError(f"{uri}: not a tbpipe promotion record; {hint}")
    current = record.get("current")
    if record["format"] == LEGACY_FORMAT:
        current = {**current, "version": ""} if isinstance(current, dict) else None
        record = {**record, "current": current}
    elif current is not None and not (isinstance(current, dict) and _VERSION.match(
            str(current.get("version", "")))):
        raise InputError(f"{uri}: its current version is not a vN folder; {hint}")
    aliases = record.get("aliases")
    if aliases is None:  # written before aliases: champion is what ``current`` names
        aliases = {CHAMPION: current["version"]} if current and current["version"] else {}
    if not isinstance(aliases, dict) or not all(
            isinstance(v, str) and _VERSION.match(v) for v in aliases.values()):
        raise InputError(f"{uri}: its aliases do not name vN folders; {hint}")
    return {**record, "aliases": aliases}


def current_model(promote_to: str) -> str:
    """The Model folder production serves now ("" when nothing was promoted yet).

    ``{target}/vN`` from ``promotion.json``; a folder of the first layout (a Model folder
    itself) is its own current model.
    """
    target, _ = resolve_target(promote_to)
    record = read_record(target)
    current = record["current"]
    if current and current.get("version"):
        return storage.join(target, current["version"])
    if storage.exists(storage.join(target, META_FILE)):
        return target
    return ""


def served_uri(target: str, version: str) -> str:
    """What a model server loads for ``version`` of ``target``: its SavedModel folder."""
    return storage.join(storage.join(target, version), SAVED_MODEL)


def serving_link(target: str) -> str:
    """The local path that follows ``champion`` (``{target}/serving``); "" on object stores."""
    return "" if storage.is_remote(target) else os.path.join(target, SERVING_LINK)


def linked_version(target: str) -> str:
    """The version the local serving link names now ("" where there is none)."""
    link = serving_link(target)
    if not link or not os.path.islink(link):
        return ""
    return os.readlink(link).partition("/")[0]


def link_serving(target: str, version: str) -> bool:
    """Point ``{target}/serving`` at ``version``'s SavedModel, atomically; whether it moved.

    Local targets only (a no-op on object stores, or without a version). Call it holding the
    target's lock: a new link ``.serving.tmp`` is made and renamed over the old one (one
    ``rename``: a reader sees the old version or the new one); a temporary link a crash left
    is replaced. The link is relative (``vN/saved_model``), so it resolves wherever the
    volume is mounted.
    """
    link = serving_link(target)
    if not link or not version:
        return False
    want = f"{version}/{SAVED_MODEL}"
    if os.path.islink(link) and os.readlink(link) == want:
        return False
    temporary = os.path.join(target, f".{SERVING_LINK}.tmp")
    with os_errors(link, "cannot link the served path"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        os.symlink(want, temporary)
        os.replace(temporary, link)
        folder = os.open(target, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename is on disk before the command says it moved
        finally:
            os.close(folder)
    return True


# ---- the lock -----------------------------------------------------------------------------

@contextlib.contextmanager
def promotion_lock(target: str) -> Iterator[bytes | None]:
    """Hold the lock of the (resolved) ``target`` for the block.

    Yields the lease's content on an object store (pass it to :func:`publish`, which checks
    it is still held before it writes the pointer), None locally.

    Raises:
        StorageError: another promotion held it for :data:`LOCK_WAIT_S`; the line names it.

    """
    uri = lock_uri(target)
    if storage.is_remote(target):
        with _lease(uri) as lease:
            yield lease
    else:
        with _flock(uri):
            yield None


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    with os_errors(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - held for the block
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StorageError(f"{path}: another promotion to this folder held the "
                                       f"lock for {LOCK_WAIT_S:g} s; try again when it has "
                                       "finished") from None
                time.sleep(_POLL_S)
        yield
    finally:
        handle.close()  # releases the lock


@dataclasses.dataclass(frozen=True)
class _Holder:
    data: bytes
    expires_at: float


def _lease_bytes() -> _Holder:
    expires = time.time() + LEASE_S
    body = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(),
            "expires_at": expires,
            "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))}
    return _Holder(json.dumps(body, sort_keys=True).encode(), expires)


@contextlib.contextmanager
def _lease(uri: str) -> Iterator[bytes]:
    mine = _lease_bytes()
    deadline = time.monotonic() + LOCK_WAIT_S
    absent_failures = 0
    while True:
        try:
            storage.create_bytes(uri, mine.data)
            break
        except StorageError:
            if not storage.exists(uri):  # released since, or the store failed: try again
                absent_failures += 1
                if absent_failures > 3:
                    raise
                continue
        held = _read_lease(uri)
        if held is None:
            continue  # released between the two calls
        if held[1] < time.time():
            _take_over(uri, held[0])
            continue
        if time.monotonic() >= deadline:
            raise StorageError(f"{uri}: another promotion holds this folder's lease "
                               f"({_describe(held[0])}); try again when it has finished, or "
                               "delete the lease if that promotion is dead")
        time.sleep(_POLL_S)
    try:
        yield mine.data
    finally:
        with contextlib.suppress(StorageError):
            held = _read_lease(uri)
            if held is not None and held[0] == mine.data:
                storage.delete_file(uri)


def _read_lease(uri: str) -> tuple[bytes, float] | None:
    """(content, expiry) of the lease at ``uri``; None when there is none. Unreadable: expired.

    At most MAX_METADATA_BYTES + 1 bytes are read: a lease is a few hundred bytes, so a
    bigger object is not one of tbpipe's and reads as unreadable (expired), never whole.
    """
    for attempt in range(4):
        try:
            data = storage.read_bytes(uri, max_bytes=MAX_METADATA_BYTES)
            break
        except StorageError:
            if not storage.exists(uri):
                return None
            if attempt == 3:  # it exists but cannot be read: the store failed
                raise
    try:
        expires = float(json.loads(data)["expires_at"])
    except (ValueError, KeyError, TypeError):
        expires = 0.0
    return data, expires


def _take_over(uri: str, stale: bytes) -> None:
    """Delete the expired lease ``stale`` at ``uri``, if this caller wins the takeover.

    Only one waiter can create the takeover mark of a given lease (create-if-absent); it
    deletes the lease only if it still holds those bytes, then its mark.
    """
    mark = f"{uri}.takeover-{hashlib.sha256(stale).hexdigest()[:16]}"
    try:
        storage.create_bytes(mark, uuid.uuid4().hex.encode())
    except StorageError:
        if not storage.exists(mark):
            raise
        time.sleep(_POLL_S)  # another waiter is taking it over
        return
    held = _read_lease(uri)
    if held is not None and held[0] == stale:
        storage.delete_file(uri)
    storage.delete_file(mark)


def _describe(lease: bytes) -> str:
    try:
        body = json.loads(lease)
        return f"host {body['host']}, pid {body['pid']}, until {body['expires']}"
    except (ValueError, KeyError, TypeError):
        return "unreadable"


def still_holds(target: str, lease: bytes | None) -> bool:
    """Whether the lease is still held (always, locally: the kernel keeps the flock)."""
    if lease is None or not storage.is_remote(target):
        return True
    held = _read_lease(lock_uri(target))
    return held is not None and held[0] == lease


# ---- recovery and the promotion itself ----------------------------------------------------

def _entries(target: str) -> dict[str, list[str]]:
    """The ``vN`` folders under ``target`` -> their files (relative to the folder)."""
    found: dict[str, list[str]] = {}
    for rel in storage.list_files(target):
        head, _, rest = rel.partition("/")
        if rest and _VERSION.match(head):
            found.setdefault(head, []).append(rest)
    return found


def recover(target: str, record: Mapping[str, object],
            entries: Mapping[str, list[str]]) -> str:
    """Delete versions a crash left unfinished (marked ``.tbpipe-partial``); what it did.

    ``record`` and ``entries`` are the target's (:func:`read_record`, ``_entries``); call it
    holding the lock (:func:`publish` does). Never touches a complete version or anything
    that is not tbpipe's.
    """
    current = (record.get("current") or {}).get("version")
    removed = []
    for version, files in sorted(entries.items()):
        if PARTIAL_MARK in files and version != current:
            storage.remove(storage.join(target, version))
            removed.append(version)
    if not removed:
        return ""
    return (f"deleted {', '.join(removed)} in {target}: left unfinished by an interrupted "
            "promotion (production was not changed by it)")


def next_version(target: str, record: Mapping[str, object],
                 entries: Mapping[str, list[str]]) -> str:
    """``v{N}``: one above every version the history names or the folder holds."""
    numbers = [0]
    for entry in record.get("history", []):
        match = _VERSION.match(str(entry.get("version", ""))) if isinstance(entry, dict) else None
        if match:
            numbers.append(int(match.group(1)))
    numbers += [int(_VERSION.match(v).group(1)) for v in entries]
    if not storage.is_remote(target) and os.path.isdir(target):
        numbers += [int(m.group(1)) for name in os.listdir(target)
                    if (m := _VERSION.match(name))]
    return f"v{max(numbers) + 1}"


def publish(model_uri: str, promote_to: str, entry: Mapping[str, object],
            lease: bytes | None = None, extras: Mapping[str, bytes] | None = None) -> dict:
    """Make the Model folder at ``model_uri`` production at ``promote_to``: a new ``vN``.

    Call it holding :func:`promotion_lock` (``promote_model`` does). It first deletes the
    versions a crash left unfinished (:func:`recover`). ``entry`` (what, when, from which
    run, with which metrics) becomes ``promotion.json``'s ``current``, with the
    version, its files and its ``parent`` (the version ``champion`` named before), and is
    appended to its ``history``; the alias ``champion`` moves to the new version. The
    version also holds ``extras`` (file name -> bytes, e.g. ``blessing.json``) and, when
    given any, its entry as ``version.json``: a version describes itself.

    Returns:
        The record written.

    Raises:
        StorageError: a copy failed; production still serves the version it served, whole.

    """
    target, _ = resolve_target(promote_to)
    record = read_record(target)
    link_serving(target, record["aliases"].get(CHAMPION, ""))  # a crash left it behind
    entries = _entries(target)
    recovered = recover(target, record, entries)
    if recovered:
        print(f"promote: {recovered}", flush=True)
    version = next_version(target, record, entries)
    folder = storage.join(target, version)
    storage.create_bytes(storage.join(folder, PARTIAL_MARK), b"")  # (1)
    written = []
    with storage.local_input(model_uri) as source:  # (2)
        for rel in storage.list_files(source):
            if rel == PARTIAL_MARK:
                continue
            storage.upload_file(os.path.join(source, rel), storage.join(folder, rel))
            written.append(rel)
    parent = record["aliases"].get(CHAMPION, "")
    current = {**entry, "version": version, "parent": parent}
    if extras:
        for name, data in {**extras, VERSION_FILE: json.dumps(
                current, indent=2, sort_keys=True).encode()}.items():
            storage.write_bytes(storage.join(folder, name), data)
            written.append(name)
    storage.delete_file(storage.join(folder, PARTIAL_MARK))  # (3)
    current = {**current, "files": written}
    history = [h for h in record["history"] if isinstance(h, dict)]
    record = {**record, "format": RECORD_FORMAT, "current": current,
              "history": [*history, current],
              "aliases": {**record["aliases"], CHAMPION: version}}
    if not still_holds(target, lease):
        raise StorageError(f"{lock_uri(target)}: this promotion's lease expired and another "
                           f"took it over; {version} was written but production is unchanged")
    storage.write_bytes(storage.join(target, RECORD_FILE),  # (4) the pointer, last
                        json.dumps(record, indent=2, sort_keys=True).encode())
    link_serving(target, version)  # (5) locally, the served path follows
    return record


# ---- aliases: the registry's names for versions --------------------------------------------

def complete_versions(target: str) -> dict[str, dict]:
    """The versions ``target`` holds, whole (no partial mark), -> their history entry."""
    record = read_record(target)
    entries = _entries(target)
    return {h["version"]: h for h in record["history"]
            if isinstance(h, dict) and h.get("version") in entries
            and PARTIAL_MARK not in entries[h["version"]]}


def move_alias(promote_to: str, alias: str, version: str, note: str = "") -> dict:
    """Point ``alias`` at ``version`` of the registry ``promote_to``; nothing is copied.

    Under the target's lock, one atomic write of ``promotion.json``. Moving ``champion``
    changes what production serves (``current`` follows it, and locally the serving link,
    :func:`link_serving`, right after the pointer). The move is recorded in ``moves``
    (alias, from, to, when, ``note``).

    Returns:
        The record written.

    Raises:
        InputError: a bad alias name, or a version the registry does not hold whole.

    """
    if not _ALIAS.match(alias):
        raise InputError(f"{alias!r}: an alias is lower-case letters, digits, '-' or '_', "
                         "starting with a letter (e.g. champion, staging)")
    target = check_target(promote_to)
    with promotion_lock(target) as lease:
        record = read_record(target)
        versions = complete_versions(target)
        if version not in versions:
            held = ", ".join(sorted(versions, key=lambda v: int(v[1:]))) or "none"
            raise InputError(f"{version}: not a complete version of {target} (it holds: "
                             f"{held}); see tbpipe models list {promote_to}")
        moved = {"alias": alias, "from": record["aliases"].get(alias, ""), "to": version,
                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "note": note}
        record = {**record, "format": RECORD_FORMAT,
                  "aliases": {**record["aliases"], alias: version},
                  "moves": [*record.get("moves", []), moved]}
        if alias == CHAMPION:
            record["current"] = versions[version]
        if not still_holds(target, lease):
            raise StorageError(f"{lock_uri(target)}: this change's lease expired and another "
                               "took it over; nothing was changed")
        storage.write_bytes(storage.join(target, RECORD_FILE),
                            json.dumps(record, indent=2, sort_keys=True).encode())
        link_serving(target, record["aliases"].get(CHAMPION, ""))  # also repairs a lag
    return record
