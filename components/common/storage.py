"""One small storage layer: local paths and ``gs://bucket/prefix`` URIs alike.

GCS goes through google-cloud-storage; credentials come only from the environment (ADC,
Workload Identity), ``STORAGE_EMULATOR_HOST`` points it at an emulator. Transient errors
(429, 5xx, dropped connections) are retried with backoff for up to ``deadline`` seconds
(google-cloud-storage's retry policy; a create that could duplicate is conditional on
generation 0). Permanent errors (no bucket, no permission) fail at once as one
:class:`StorageError` line naming the URI. Local writes go to a temporary name, then a
rename, so a failed step never leaves an output that looks whole.
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
DEFAULT_DEADLINE_S = 120.0  # google-cloud-storage's own default retry deadline


class StorageUnavailable(StorageError):  # noqa: N818 - reads as a state, like the GCS error
    """Storage could not be reached in time (transient errors outlasted the retry deadline)."""


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
    """Return the process-wide GCS client (honours ``STORAGE_EMULATOR_HOST``)."""
    from google.cloud import storage

    return storage.Client()


def reset_gcs_client() -> None:
    """Forget the cached client, e.g. after ``STORAGE_EMULATOR_HOST`` changed."""
    gcs_client.cache_clear()


def _blob(uri: str):  # noqa: ANN202
    bucket, name = split_gcs(uri)
    return gcs_client().bucket(bucket).blob(name)


def _calls(deadline: float | None) -> dict:
    """Keyword arguments for one GCS call: the retry policy and a per-request HTTP timeout."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    deadline = DEFAULT_DEADLINE_S if deadline is None else deadline
    return {"retry": DEFAULT_RETRY.with_timeout(deadline), "timeout": min(60.0, max(deadline, 1))}


@contextlib.contextmanager
def gcs_errors(uri: str) -> Iterator[None]:
    """Turn google-cloud (and transport) errors into one StorageError line naming ``uri``."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    try:
        yield
    except gexc.NotFound as exc:
        raise StorageError(f"{uri}: not found; check that bucket '{split_gcs(uri)[0]}' "
                           "exists and the path is right") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise StorageError(f"{uri}: permission denied ({exc.code}); grant the step's service "
                           "account access to the bucket") from exc
    except auth_exc.DefaultCredentialsError as exc:
        raise StorageError(f"{uri}: no Google credentials found; use Application Default "
                           "Credentials or Workload Identity") from exc
    except (gexc.RetryError, requests.RequestException, auth_exc.TransportError,
            ConnectionError) as exc:
        cause = exc.cause if isinstance(exc, gexc.RetryError) and exc.cause else exc
        reason = ("connection failed" if isinstance(cause, (requests.ConnectionError,
                                                            ConnectionError))
                  else _first_line(cause))
        raise StorageUnavailable(f"{uri}: storage unreachable ({reason}); "
                                 "retried with backoff, try again later") from exc
    except gexc.GoogleAPIError as exc:
        raise StorageError(f"{uri}: storage error: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def exists(uri: str, deadline: float | None = None) -> bool:
    """Whether a file (or, for gs://, an object or a prefix with objects) exists."""
    if not is_gcs(uri):
        return os.path.exists(uri)
    with gcs_errors(uri):
        if split_gcs(uri)[1] and _blob(uri).exists(**_calls(deadline)):
            return True
    return bool(list_files(uri, max_results=1, deadline=deadline))


def read_bytes(uri: str, deadline: float | None = None) -> bytes:
    """Return the whole content of a file or object."""
    if not is_gcs(uri):
        try:
            return Path(uri).read_bytes()
        except OSError as exc:
            raise StorageError(f"{uri}: cannot read ({exc.strerror})") from exc
    with gcs_errors(uri):
        return _blob(uri).download_as_bytes(**_calls(deadline))


def write_bytes(uri: str, data: bytes, deadline: float | None = None) -> None:
    """Write ``data`` whole: atomically (temp + rename) locally; one upload on GCS.

    A whole-object upload is idempotent (a retry writes the same bytes), so it is retried.
    """
    if is_gcs(uri):
        with gcs_errors(uri):
            _blob(uri).upload_from_string(data, **_calls(deadline))
        return
    with _local_temp(uri, data) as tmp:
        os.replace(tmp, uri)


def create_bytes(uri: str, data: bytes, deadline: float | None = None) -> None:
    """Create ``uri`` holding ``data`` only if it does not exist yet (an immutable object).

    On GCS the upload is conditional on generation 0, so retries cannot duplicate or
    overwrite: if an earlier attempt landed (its reply was lost) the object already holds
    ``data`` and this returns; an object with other content raises StorageError.
    """
    if not is_gcs(uri):
        with _local_temp(uri, data) as tmp:
            try:
                os.link(tmp, uri)
            except FileExistsError:
                _check_same(uri, data, Path(uri).read_bytes())
        return
    from google.api_core import exceptions as gexc
    from google.cloud.storage.retry import ConditionalRetryPolicy, is_generation_specified

    calls = _calls(deadline)
    calls["retry"] = ConditionalRetryPolicy(calls["retry"], is_generation_specified,
                                            ["query_params"])
    with gcs_errors(uri):
        try:
            _blob(uri).upload_from_string(data, if_generation_match=0, **calls)
        except gexc.PreconditionFailed:
            _check_same(uri, data, _blob(uri).download_as_bytes(**_calls(deadline)))


def _check_same(uri: str, data: bytes, existing: bytes) -> None:
    if existing != data:
        raise StorageError(f"{uri}: already exists with other content; it is never overwritten")


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
    if not is_gcs(uri):
        root = Path(uri)
        if root.is_file():
            return [""]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    bucket, prefix = split_gcs(uri)
    prefix = f"{prefix}/" if prefix else ""
    with gcs_errors(uri):
        blobs = gcs_client().list_blobs(bucket, prefix=prefix, max_results=max_results,
                                        **_calls(deadline))
        return sorted(b.name[len(prefix):] for b in blobs if not b.name.endswith("/"))


def upload_file(local_path: str, uri: str, deadline: float | None = None) -> None:
    """Copy a local file to ``uri`` (a local path or gs://); retried like write_bytes."""
    if is_gcs(uri):
        with gcs_errors(uri):
            _blob(uri).upload_from_filename(local_path, **_calls(deadline))
        return
    write_bytes(uri, Path(local_path).read_bytes())


def download_file(uri: str, local_path: str, deadline: float | None = None) -> None:
    """Copy ``uri`` to a local file."""
    Path(local_path).parent.mkdir(parents=True, exist_ok=True)
    if is_gcs(uri):
        with gcs_errors(uri):
            _blob(uri).download_to_filename(local_path, **_calls(deadline))
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

    A previous folder at ``path`` is kept until the new one is complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes 0700; outputs get the usual folder mode
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
