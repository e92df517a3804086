"""One small storage layer: local paths and ``gs://bucket/prefix`` URIs alike.

GCS goes through google-cloud-storage, with credentials from the environment (Application
Default Credentials, Workload Identity) and ``STORAGE_EMULATOR_HOST`` honoured by the client.
Local writes are atomic: a temporary name, then a rename, so a failed step never leaves an
output that looks whole.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from components.common.errors import StorageError

GCS_SCHEME = "gs://"


def is_gcs(uri: str) -> bool:
    """Whether ``uri`` names a GCS location."""
    return uri.startswith(GCS_SCHEME)


def split_gcs(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, prefix = uri[len(GCS_SCHEME):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: a gs:// URI needs a bucket name, e.g. gs://my-bucket/path")
    return bucket, prefix.strip("/")


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a local path or a gs:// URI."""
    if is_gcs(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return os.path.join(uri, *parts)


@functools.cache
def gcs_client():  # noqa: ANN201 - google.cloud.storage.Client, imported lazily
    """The process-wide GCS client (honours ``STORAGE_EMULATOR_HOST``)."""
    from google.cloud import storage

    return storage.Client()


def _blob(uri: str):  # noqa: ANN202
    bucket, name = split_gcs(uri)
    return gcs_client().bucket(bucket).blob(name)


@contextlib.contextmanager
def gcs_errors(uri: str) -> Iterator[None]:
    """Turn google-cloud errors into one StorageError line naming ``uri``."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except gexc.NotFound as exc:
        raise StorageError(f"{uri}: not found ({_first_line(exc)}); check the bucket and path") from exc
    except gexc.Forbidden as exc:
        raise StorageError(
            f"{uri}: permission denied; grant the step's service account access to the bucket"
        ) from exc
    except gexc.GoogleAPIError as exc:
        raise StorageError(f"{uri}: storage error: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def exists(uri: str) -> bool:
    """Whether a file (or, for gs://, an object or a prefix with objects) exists."""
    if not is_gcs(uri):
        return os.path.exists(uri)
    with gcs_errors(uri):
        if _blob(uri).exists():
            return True
        return bool(list_files(uri, max_results=1))


def read_bytes(uri: str) -> bytes:
    """The whole content of a file or object."""
    if not is_gcs(uri):
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"{uri}: cannot read ({exc.strerror})") from exc
    with gcs_errors(uri):
        return _blob(uri).download_as_bytes()


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` whole: atomically (temp + rename) locally; one upload on GCS."""
    if is_gcs(uri):
        with gcs_errors(uri):
            _blob(uri).upload_from_string(data, if_generation_match=None)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def list_files(uri: str, max_results: int | None = None) -> list[str]:
    """Paths of the files under ``uri``, relative to it, sorted."""
    if not is_gcs(uri):
        root = Path(uri)
        if root.is_file():
            return [""]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    bucket, prefix = split_gcs(uri)
    prefix = f"{prefix}/" if prefix else ""
    with gcs_errors(uri):
        blobs = gcs_client().list_blobs(bucket, prefix=prefix, max_results=max_results)
        return sorted(b.name[len(prefix):] for b in blobs if not b.name.endswith("/"))


def upload_file(local_path: str, uri: str) -> None:
    """Copy a local file to ``uri`` (a local path or gs://)."""
    if is_gcs(uri):
        with gcs_errors(uri):
            _blob(uri).upload_from_filename(local_path)
        return
    write_bytes(uri, Path(local_path).read_bytes())


def download_file(uri: str, local_path: str) -> None:
    """Copy ``uri`` to a local file."""
    Path(local_path).parent.mkdir(parents=True, exist_ok=True)
    if is_gcs(uri):
        with gcs_errors(uri):
            _blob(uri).download_to_filename(local_path)
    else:
        shutil.copyfile(uri, local_path)


@contextlib.contextmanager
def local_input(uri: str) -> Iterator[str]:
    """Yield a local path holding ``uri``'s content (a file or a folder).

    Local paths are yielded as they are; gs:// objects or prefixes are downloaded to a
    temporary folder that is removed afterwards.
    """
    if not is_gcs(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="tbpipe-in-") as tmp:
        name = split_gcs(uri)[1].rsplit("/", 1)[-1] or "data"
        target = os.path.join(tmp, name)
        files = list_files(uri)
        if not files:
            raise StorageError(f"{uri}: no such object or prefix; check the path")
        if files == [""]:
            download_file(uri, target)
        for rel in (f for f in files if f):
            download_file(join(uri, rel), os.path.join(target, rel))
        yield target


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temporary sibling folder that becomes ``path`` only if the block succeeds.

    A previous folder at ``path`` is kept until the new one is complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        yield str(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
