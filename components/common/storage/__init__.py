"""One small storage layer: local paths, ``gs://bucket/prefix`` and ``s3://bucket/prefix`` alike.

gs:// URIs go to :mod:`.gcs` (google-cloud-storage), s3:// URIs to :mod:`.s3` (boto3; AWS,
MinIO via ``AWS_ENDPOINT_URL``); both take credentials only from the environment, retry
transient errors with backoff for up to ``deadline`` seconds,
:data:`DEFAULT_DEADLINE_S` unless a call says otherwise; permanent errors fail at once as
one :class:`StorageError` line naming the URI). Local writes go to a temporary name, then a
rename, so a failed step never leaves an output that looks whole. A local write that fails
(disk full, read-only file system, a file where a folder should be) is one StorageError line
naming the path and the cause (:meth:`StorageError.from_os_error`), and leaves what the path
held before whole, with no temporary file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tbpipe.components.common.errors import StorageError, os_errors
from tbpipe.components.common.storage import gcs, s3

DEFAULT_DEADLINE_S = 120.0  # google-cloud-storage's own default retry deadline


def _deadline(deadline: float | None) -> float:
    """Seconds a remote call may retry: ``deadline``, or DEFAULT_DEADLINE_S (read at call time)."""
    return DEFAULT_DEADLINE_S if deadline is None else deadline


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names an object store location (``gs://``, ``s3://``), not a local path."""
    return gcs.is_gcs(uri) or s3.is_s3(uri)


def _store(uri: str):  # noqa: ANN202 - the module (gcs or s3) serving a remote ``uri``
    """The object-store module for a remote ``uri``; both offer the same object functions."""
    return s3 if s3.is_s3(uri) else gcs


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a local path or a gs:// or s3:// URI."""
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return os.path.join(uri, *parts)


def exists(uri: str, deadline: float | None = None) -> bool:
    """Whether a file (or, remote, an object or a prefix with objects) exists."""
    if is_remote(uri):
        return _store(uri).object_exists(uri, _deadline(deadline))
    return os.path.exists(uri)


def read_bytes(uri: str, deadline: float | None = None) -> bytes:
    """Return the whole content of a file or object."""
    if is_remote(uri):
        return _store(uri).read_object(uri, _deadline(deadline))
    try:
        return Path(uri).read_bytes()
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc.strerror})") from exc


def write_bytes(uri: str, data: bytes, deadline: float | None = None) -> None:
    """Write ``data`` whole: atomically (temp + rename) locally; one upload on gs:// or s3://.

    A whole-object upload is idempotent (a retry writes the same bytes), so it is retried.
    """
    if is_remote(uri):
        _store(uri).write_object(uri, data, _deadline(deadline))
        return
    with os_errors(uri), _local_temp(uri, data) as tmp:
        os.replace(tmp, uri)


def create_bytes(uri: str, data: bytes, deadline: float | None = None) -> None:
    """Create ``uri`` holding ``data`` only if it does not exist yet (an immutable object).

    On GCS the upload is conditional on generation 0 (on S3: ``If-None-Match: *``), so
    retries cannot duplicate or overwrite: if an earlier attempt landed (its reply was lost)
    the object already holds ``data`` and this returns; an object with other content raises
    StorageError.
    """
    if is_remote(uri):
        existing = _store(uri).create_object(uri, data, _deadline(deadline))
    else:
        with os_errors(uri):
            existing = _create_local(uri, data)
    if existing is not None and existing != data:
        raise StorageError(f"{uri}: already exists with other content; it is never overwritten")


def _create_local(uri: str, data: bytes) -> bytes | None:
    """Hard-link a complete temporary file to ``uri``; None, or what ``uri`` already held."""
    with _local_temp(uri, data) as tmp:
        try:
            os.link(tmp, uri)
        except FileExistsError:
            return Path(uri).read_bytes()
    return None


@contextlib.contextmanager
def _local_temp(uri: str, data: bytes) -> Iterator[str]:
    """Yield a temporary file beside ``uri`` holding ``data``, removed afterwards."""
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def list_files(uri: str, max_results: int | None = None,
               deadline: float | None = None) -> list[str]:
    """Paths of the files under ``uri``, relative to it, sorted."""
    if is_remote(uri):
        return _store(uri).list_objects(uri, _deadline(deadline), max_results=max_results)
    root = Path(uri)
    if root.is_file():
        return [""]
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def delete_file(uri: str, deadline: float | None = None) -> None:
    """Delete a file or object; one that is already gone is fine (idempotent, so retried)."""
    if is_remote(uri):
        _store(uri).delete_object(uri, _deadline(deadline))
        return
    with os_errors(uri, "cannot delete"), contextlib.suppress(FileNotFoundError):
        os.unlink(uri)


def upload_file(local_path: str, uri: str, deadline: float | None = None) -> None:
    """Copy a local file to ``uri`` (a local path, gs:// or s3://); retried like write_bytes."""
    if is_remote(uri):
        _store(uri).upload_object(local_path, uri, _deadline(deadline))
        return
    with os_errors(local_path, "cannot read"):
        data = Path(local_path).read_bytes()
    write_bytes(uri, data)


def download_file(uri: str, local_path: str, deadline: float | None = None) -> None:
    """Copy ``uri`` to a local file (locally: through a temporary sibling, then a rename)."""
    with os_errors(local_path):
        Path(local_path).parent.mkdir(parents=True, exist_ok=True)
    if is_remote(uri):
        _store(uri).download_object(uri, local_path, _deadline(deadline))
        return
    with os_errors(uri, "cannot read"):
        data = Path(uri).read_bytes()
    write_bytes(local_path, data)


@contextlib.contextmanager
def local_input(uri: str) -> Iterator[str]:
    """Yield a local path holding ``uri``'s content (a file or a folder).

    Local paths are yielded as they are; gs:// or s3:// objects or prefixes are downloaded to a
    temporary folder that is removed afterwards.
    """
    if not is_remote(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="tbpipe-in-") as tmp:
        name = uri.split("://", 1)[1].rstrip("/").partition("/")[2].rsplit("/", 1)[-1]
        name = name or "data"
        target = os.path.join(tmp, name)
        files = list_files(uri)
        if files:
            for rel in files:
                download_file(join(uri, rel), os.path.join(target, rel))
        elif exists(uri):
            download_file(uri, target)
        else:
            raise StorageError(f"{uri}: no such object or prefix; check the path")
        yield target


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temporary sibling folder that becomes ``path`` only if the block succeeds.

    A previous folder at ``path`` is kept until the new one is complete; if the swap fails,
    it is put back. OSErrors of the block itself are the block's to describe (they may come
    from reading an input); those of making and swapping the folder are StorageError lines.
    """
    final = Path(path)
    with os_errors(path):
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial",
                                    dir=final.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        with os_errors(path):
            tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; outputs get the usual folder mode
        yield str(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)  # left by a crash between the two renames
    try:
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            with contextlib.suppress(OSError):
                os.replace(old, final)
        raise StorageError.from_os_error(path, exc) from exc
    shutil.rmtree(old, ignore_errors=True)


def remove(uri: str, deadline: float | None = None) -> None:
    """Delete a file or a folder (remote: an object and every object under its prefix).

    Nothing there is no error; a failure is one StorageError line naming ``uri``.
    """
    if is_remote(uri):
        _store(uri).delete_objects(uri, _deadline(deadline))
        return
    path = Path(uri)
    with os_errors(uri, "cannot remove"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
