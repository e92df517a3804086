"""One storage interface for local paths and every URI scheme that fsspec knows.

A URI with a scheme (``gs://``, ``s3://``, ``az://``, ``abfs://``, ...; anything but
``file://``) is remote and goes through fsspec (``fsspec.core.url_to_fs``): gcsfs, s3fs, adlfs
and the other fsspec implementations are the stores, each configured the way its library
documents (credentials and endpoints from the environment: ``STORAGE_EMULATOR_HOST``,
``AWS_ENDPOINT_URL``, ``AZURE_STORAGE_CONNECTION_STRING``, ...; any option through fsspec's
own ``FSSPEC_<PROTOCOL>_<OPTION>`` variables). tbpipe has no code for any one store; what
it adds to fsspec is:

* **A deadline.** Every remote call is retried on transient errors (dropped connections,
  timeouts, 429/5xx) with jittered backoff until ``deadline`` seconds have passed
  (:data:`DEFAULT_DEADLINE_S` unless a call says otherwise). The libraries' own retries run
  inside each attempt, and each attempt is cut at the time left (asynchronous
  implementations, which the object stores are, through ``fsspec.asyn.sync``'s timeout), so
  the deadline bounds the whole call.
* **One-line errors.** A failure is one :class:`StorageError` line naming the URI and the
  cause: not found (naming the bucket), permission denied, no credentials, or (after the
  deadline) :class:`StorageUnavailable`. Permanent errors fail at once.
* **Create-if-absent** (:func:`create_bytes`, for run claims and event segments): fsspec's
  ``pipe_file(mode="create")``, a conditional write where the store has one
  (:data:`CONDITIONAL_CREATE`); elsewhere a check, then a write.
* **Atomic local files.** A local write, download or upload target goes to a temporary
  sibling, then a rename, so a failed step never leaves an output that looks whole. A local
  write that fails (disk full, read-only file system, a file where a folder should be) is
  one StorageError line naming the path and the cause (:meth:`StorageError.from_os_error`),
  and leaves what the path held before whole, with no temporary file behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from tbpipe.components.common.errors import StorageError, StorageUnavailable, os_errors
from tbpipe.components.common.regular_files import check_regular, read_bounded, too_big

DEFAULT_DEADLINE_S = 120.0  # google-cloud-storage's own default retry deadline
MAX_BACKOFF_S = 10.0
#: Schemes whose fsspec implementation turns ``pipe_file(mode="create")`` into the store's
#: own conditional write, so that exactly one of two racing creates wins: S3's
#: ``If-None-Match: *`` (s3fs), GCS's ``ifGenerationMatch=0`` (gcsfs), Azure Blob's
#: ``If-None-Match: *`` (adlfs ``overwrite=False``). On any other scheme :func:`create_bytes`
#: checks, then writes: two creates racing within one request's time may both pass.
CONDITIONAL_CREATE = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
LOCAL_SCHEMES = frozenset({"file", "local"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

# What an error is, read from its class names (and those of its causes), its HTTP status
# and its store's error code, so that no store's exception classes need importing.
_NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "NotFound", "ContainerNotFound",
                              "BlobNotFound", "ResourceNotFoundError"})
_DENIED_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "InvalidToken", "ExpiredToken", "AccountProblem", "AuthenticationFailed",
    "AuthorizationFailure", "AuthorizationPermissionMismatch", "InsufficientAccountPermissions",
})
_TRANSIENT_CODES = frozenset({
    "RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "Throttling", "ThrottlingException",
    "TooManyRequests", "InternalError", "ServiceUnavailable", "OperationAborted",
    "ConditionalRequestConflict", "ServerBusy", "OperationTimedOut",
})
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CONNECTION_CLASSES = frozenset({
    "ConnectionError", "EndpointConnectionError", "ConnectionClosedError",
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError",
    "ServiceRequestError", "ProxyError", "ClientOSError",
})
_TRANSIENT_CLASSES = _CONNECTION_CLASSES | frozenset({
    "TimeoutError", "FSTimeoutError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "ServiceResponseError", "ServerTimeoutError",
    "ClientPayloadError", "IncompleteReadError", "IncompleteRead", "ChunkedEncodingError",
    "RetryError",
})
_NO_CREDENTIALS = {
    "NoCredentialsError": "no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (or a profile or role)",
    "PartialCredentialsError": "incomplete AWS credentials; set both AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY",
    "DefaultCredentialsError": "no Google credentials found; use Application Default "
                               "Credentials or Workload Identity",
    "CredentialUnavailableError": "no Azure credentials found; set "
                                  "AZURE_STORAGE_CONNECTION_STRING (or an account key, SAS "
                                  "token or identity)",
}
#: What to check when a store refuses access, per scheme (credentials are the store's own).
_ACCESS_HINTS = {
    "s3": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's policy for the "
          "step's identity",
    "gs": "grant the step's service account access to the bucket",
    "az": "check the Azure credentials (AZURE_STORAGE_CONNECTION_STRING, account key, SAS "
          "token or identity) and the container's access",
}
_ACCESS_HINTS |= {"s3a": _ACCESS_HINTS["s3"], "gcs": _ACCESS_HINTS["gs"],
                  "abfs": _ACCESS_HINTS["az"], "abfss": _ACCESS_HINTS["az"]}

T = TypeVar("T")


def scheme(uri: str) -> str:
    """The scheme of ``uri`` (``"gs"``, ``"s3"``, ``"az"``...), lower case; "" for a path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def is_remote(uri: str) -> bool:
    """Whether ``uri`` names a store location (any scheme but ``file://``), not a local path.

    fsspec must know the scheme (and its implementation be installed) for it to be used;
    otherwise the first call on it is a StorageError line naming the scheme.
    """
    return scheme(uri) not in LOCAL_SCHEMES | {""}


#: Where a KFP v2 step finds an artifact of a store (``Artifact.path``), and that store's
#: scheme: ``/gcs/b/x`` is ``gs://b/x`` (KFP's MinIO is S3's protocol).
KFP_ARTIFACT_MOUNTS = (("/gcs/", "gs://"), ("/s3/", "s3://"), ("/minio/", "s3://"))


def artifact_uri(path: str) -> str:
    """The store URI of a KFP artifact that another pod reads, given its path or its URI.

    A step records its inputs by the path KFP gave it (``/gcs/bucket/run/train_data``); in
    another run's pod that path does not exist, the object in the store does. A path that
    exists here, or is under no KFP mount, is returned as it is. KFP names an object of its
    default MinIO store ``minio://bucket/key`` (``Artifact.uri``), a scheme no filesystem
    library reads: it is ``s3://bucket/key``, with ``AWS_ENDPOINT_URL`` naming the MinIO
    service (docs/cluster.md).
    """
    if path.startswith("minio://"):
        return "s3://" + path[len("minio://"):]
    for mount, store in KFP_ARTIFACT_MOUNTS:
        if path.startswith(mount) and not os.path.exists(path):
            return store + path[len(mount):]
    return path


def to_local_path(uri: str) -> str:
    """The local path that a local ``uri`` names (``file:///x`` -> ``/x``)."""
    return uri.split("://", 1)[1] if scheme(uri) in LOCAL_SCHEMES else uri


_filesystem_classes: set[type] = set()
_classes_lock = threading.Lock()


def filesystem(uri: str):  # noqa: ANN201 - (fsspec.AbstractFileSystem, path)
    """The fsspec filesystem serving the remote ``uri``, and the path within it.

    Instances are fsspec's (cached per options); :func:`reset_filesystems` forgets them.

    Raises:
        StorageError: fsspec does not know the scheme, or its implementation is not installed.

    """
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise StorageError(f"{uri}: the {scheme(uri)}:// store needs a package that is not "
                           f"installed ({_first_line(exc)})") from exc
    except ValueError as exc:
        raise StorageError(f"{uri}: fsspec knows no store for {scheme(uri)}:// "
                           f"({_first_line(exc)}); use a path or a scheme fsspec knows, "
                           "e.g. gs://, s3://, az://") from exc
    with _classes_lock:
        _filesystem_classes.add(type(fs))
    return fs, path


def reset_filesystems() -> None:
    """Forget every cached filesystem, e.g. after credentials or an endpoint variable changed."""
    with _classes_lock:
        classes = list(_filesystem_classes)
    for cls in classes:
        cls.clear_instance_cache()


def _deadline(deadline: float | None) -> float:
    """Seconds a remote call may retry: ``deadline``, or DEFAULT_DEADLINE_S (read at call time)."""
    return DEFAULT_DEADLINE_S if deadline is None else deadline


def _attempt(fs, method: str, timeout: float, *args, **kwargs):  # noqa: ANN001, ANN202
    """Call ``fs.<method>``; on an asynchronous filesystem cut it at ``timeout`` seconds."""
    from fsspec.asyn import AsyncFileSystem, sync

    if isinstance(fs, AsyncFileSystem) and hasattr(fs, f"_{method}"):
        return sync(fs.loop, getattr(fs, f"_{method}"), *args, timeout=max(timeout, 0.05),
                    **kwargs)
    return getattr(fs, method)(*args, **kwargs)


def _call(uri: str, deadline: float | None, method: str, *args, **kwargs):  # noqa: ANN202
    """``fs.<method>(*args)`` for ``uri``: transient errors retried until the deadline.

    Raises:
        StorageError: a permanent error (at once), as one line naming ``uri``.
        StorageUnavailable: transient errors outlasted the deadline.

    """
    fs, _ = filesystem(uri)
    return _retried(uri, _deadline(deadline),
                    lambda left: _attempt(fs, method, left, *args, **kwargs))


def _retried(uri: str, deadline: float, call: Callable[[float], T]) -> T:
    """Run ``call(seconds_left)``, retrying transient errors with jittered backoff."""
    give_up = time.monotonic() + deadline
    delay = 0.25
    while True:
        try:
            return call(give_up - time.monotonic())
        except StorageError:
            raise
        except Exception as exc:
            if not _is_transient(exc):
                raise _storage_error(uri, exc) from exc
            pause = delay * (0.5 + random.random() / 2)
            if time.monotonic() + pause > give_up:
                raise StorageUnavailable(f"{uri}: storage unreachable ({_reason(exc)}); "
                                         "retried with backoff, try again later") from exc
        time.sleep(pause)
        delay = min(delay * 2, MAX_BACKOFF_S)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the errors it was raised from, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 8:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for err in _chain(exc) for cls in type(err).__mro__}


def _status(exc: BaseException) -> int:
    """The HTTP status an error carries (botocore, gcsfs, azure-core, aiohttp), or 0."""
    for err in _chain(exc):
        response = getattr(err, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status:
                return int(status)
        for name in ("status_code", "status", "code"):
            value = getattr(err, name, None)
            if isinstance(value, int) and 100 <= value < 600:
                return value
    return 0


def _error_code(exc: BaseException) -> str:
    """The store's error code (S3's ``AccessDenied``, Azure's ``ContainerNotFound``), or ""."""
    for err in _chain(exc):
        response = getattr(err, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return str(response["Error"]["Code"])
        code = getattr(err, "error_code", None)
        if code:
            return str(getattr(code, "value", code))
    return ""


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (FileNotFoundError, FileExistsError, PermissionError, ValueError)) \
            and not _class_names(exc) & _TRANSIENT_CLASSES:
        return False
    if _credentials_missing(exc) or _is_denied(exc):
        return False
    return bool(_class_names(exc) & _TRANSIENT_CLASSES
                or _status(exc) in _TRANSIENT_STATUS or _error_code(exc) in _TRANSIENT_CODES)


def _is_not_found(exc: BaseException) -> bool:
    return (isinstance(exc, FileNotFoundError) or _status(exc) == 404
            or _error_code(exc) in _NOT_FOUND_CODES)


def _is_denied(exc: BaseException) -> bool:
    return (isinstance(exc, PermissionError) or _status(exc) in (401, 403)
            or _error_code(exc) in _DENIED_CODES
            or _first_line(exc).startswith(("Forbidden", "Unauthorized"))
            or "ClientAuthenticationError" in _class_names(exc))


#: A store that fell back to anonymous access (gcsfs does, finding no credentials) answers
#: 401 "Anonymous caller ...": that is missing credentials too.
_ANONYMOUS_CALLER = {"gs": "DefaultCredentialsError", "gcs": "DefaultCredentialsError"}


def _credentials_missing(exc: BaseException, uri: str = "") -> str | None:
    names = _class_names(exc)
    if _status(exc) == 401 and "anonymous" in _first_line(exc).lower() \
            and scheme(uri) in _ANONYMOUS_CALLER:
        names.add(_ANONYMOUS_CALLER[scheme(uri)])
    return next((text for name, text in _NO_CREDENTIALS.items() if name in names), None)


def _storage_error(uri: str, exc: BaseException) -> StorageError:
    """The one line for a permanent error met on ``uri``."""
    missing = _credentials_missing(exc, uri)
    if missing:
        return StorageError(f"{uri}: {missing}")
    if _is_not_found(exc):
        return _not_found(uri)
    if _is_denied(exc):
        status, code = _status(exc), _error_code(exc)
        what = " ".join(str(p) for p in (status or (403 if "Forbidden" in str(exc) else 0),
                                         code) if p)
        hint = _ACCESS_HINTS.get(scheme(uri), "check the store's credentials and access "
                                              "rights for the step's identity")
        return StorageError(f"{uri}: permission denied ({what or 'refused'}); {hint}")
    return StorageError(f"{uri}: storage error: {_reason(exc)}")


def _bucket(uri: str) -> str:
    """The bucket (container, first path segment) that ``uri`` names."""
    return uri.split("://", 1)[-1].partition("/")[0]


def _was_not_found(exc: StorageError) -> bool:
    """Whether ``exc`` (from :func:`_call`) reports a missing object or bucket."""
    return exc.__cause__ is not None and _is_not_found(exc.__cause__) \
        and not _credentials_missing(exc.__cause__)


def _not_found(uri: str) -> StorageError:
    return StorageError(f"{uri}: not found; check that bucket '{_bucket(uri)}' exists and the "
                        "path is right")


def _reason(exc: BaseException) -> str:
    if _class_names(exc) & _CONNECTION_CLASSES:
        return "connection failed"
    if _class_names(exc) & {"TimeoutError", "FSTimeoutError", "ReadTimeoutError"}:
        return "timed out"
    code = _error_code(exc)
    text = _first_line(exc)
    return f"{code}: {text}" if code and code not in text else text


def _first_line(exc: BaseException) -> str:
    """The error's text on one line (some libraries' errors span several), or its class."""
    for err in _chain(exc):
        text = " ".join(str(err).split())
        if text:
            return text[:200]
    return type(exc).__name__


_known_buckets: set[str] = set()


def _check_bucket(uri: str, deadline: float | None) -> None:
    """Raise the not-found line if the bucket (top folder) of ``uri`` does not exist."""
    fs, path = filesystem(uri)
    root = path.split("/", 1)[0]
    key = f"{scheme(uri)}://{root}"
    if not root or key in _known_buckets:
        return
    if not _call(uri, deadline, "exists", root):
        raise _not_found(uri)
    _known_buckets.add(key)


def join(uri: str, *parts: str) -> str:
    """Join path segments onto a local path or a store URI."""
    if is_remote(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return os.path.join(uri, *parts)


def exists(uri: str, deadline: float | None = None) -> bool:
    """Whether a file (or, remote, an object or a prefix with objects) exists.

    Raises:
        StorageError: the bucket itself does not exist (or another permanent error).

    """
    if not is_remote(uri):
        return os.path.exists(to_local_path(uri))
    fs, path = filesystem(uri)
    fs.invalidate_cache(path)
    try:
        _call(uri, deadline, "info", path)
        return True
    except StorageError as exc:
        if not _was_not_found(exc):
            raise
    _check_bucket(uri, deadline)
    return False


def read_bytes(uri: str, deadline: float | None = None, max_bytes: int | None = None) -> bytes:
    """Return the whole content of a file or object.

    With ``max_bytes``, at most ``max_bytes + 1`` bytes are read (one ranged GET remotely):
    a longer answer means the file is bigger than the caller allows, who says so.
    """
    if is_remote(uri):
        # One ranged GET (``bytes=0-``): s3fs's plain cat_file asks for the size first, and a
        # HEAD's refusal carries no reason (a wrong secret and a denied bucket read alike).
        path = filesystem(uri)[1]
        end = {} if max_bytes is None else {"end": max_bytes + 1}
        try:
            return _call(uri, deadline, "cat_file", path, start=0, **end)
        except StorageError as exc:
            if exc.__cause__ is None or not (_status(exc.__cause__) == 416 or _error_code(
                    exc.__cause__) == "InvalidRange"):
                raise
        return _call(uri, deadline, "cat_file", path)  # an empty object has no byte 0
    try:
        if max_bytes is None:
            return Path(to_local_path(uri)).read_bytes()
        with open(to_local_path(uri), "rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc.strerror})") from exc



def read_bounded_uri(uri: str, limit: int, what: str) -> bytes:
    """The bytes of a local file (read_bounded: a regular file) or object, of at most ``limit``.

    An object is read with one ranged GET of at most ``limit + 1`` bytes
    (:func:`read_bytes` with ``max_bytes``): an object past the bound never comes whole into
    memory.

    Args:
        uri: A local path or a store URI (gs://, s3://, az://...), named in the error line.
        limit: The most bytes the file may have.
        what: What the file should be (``model.json``, ``run summary``), for the error line.

    Returns:
        The file's bytes.

    Raises:
        InputError: one line naming ``uri`` and ``limit``: the file is bigger (or, local, not
            a regular file, or unreadable).
        StorageError: the object cannot be read from its store.

    """
    if not is_remote(uri):
        return read_bounded(uri, uri, limit, what)
    data = read_bytes(uri, max_bytes=limit)
    if len(data) > limit:
        raise too_big(uri, f"over {limit}", limit, what)
    return data

def write_bytes(uri: str, data: bytes, deadline: float | None = None) -> None:
    """Write ``data`` whole: atomically (temp + rename) locally; one upload to a store.

    A whole-object upload is idempotent (a retry writes the same bytes), so it is retried.
    """
    if is_remote(uri):
        _call(uri, deadline, "pipe_file", filesystem(uri)[1], data)
        return
    path = to_local_path(uri)
    with os_errors(uri), _local_temp(path, data) as tmp:
        os.replace(tmp, path)


def create_bytes(uri: str, data: bytes, deadline: float | None = None) -> None:
    """Create ``uri`` holding ``data`` only if it does not exist yet (an immutable object).

    Locally a hard link of a complete temporary file; on a store of
    :data:`CONDITIONAL_CREATE` a conditional upload (fsspec's ``mode="create"``), so
    retries cannot duplicate or overwrite: if an earlier attempt landed (its reply was lost)
    the object already holds ``data`` and this returns; an object with other content raises
    StorageError. On other stores: a check, then a write (not race-free).
    """
    if not is_remote(uri):
        with os_errors(uri):
            existing = _create_local(to_local_path(uri), data)
    else:
        existing = _create_remote(uri, data, _deadline(deadline))
    if existing is not None and existing != data:
        raise StorageError(f"{uri}: already exists with other content; it is never overwritten")


def supports_conditional_create(uri: str) -> bool:
    """Whether :func:`create_bytes` on ``uri`` is race-free (local, or a conditional write)."""
    return not is_remote(uri) or scheme(uri) in CONDITIONAL_CREATE


def _create_remote(uri: str, data: bytes, deadline: float) -> bytes | None:
    """Create the object; None, or what it already held (read back within the deadline).

    What it held is read up to ``len(data) + 1`` bytes, as locally: enough to compare.
    """
    fs, path = filesystem(uri)
    stop_at = time.monotonic() + deadline
    if scheme(uri) not in CONDITIONAL_CREATE:
        _warn_unconditional(uri)
        if exists(uri, deadline):
            return read_bytes(uri, max(stop_at - time.monotonic(), 0.1), max_bytes=len(data))
        write_bytes(uri, data, max(stop_at - time.monotonic(), 0.1))
        return None

    def create(left: float) -> None:
        try:
            _attempt(fs, "pipe_file", left, path, data, mode="create")
        except FileExistsError:
            raise
        except OSError as exc:  # s3fs reads 412 PreconditionFailed as EINVAL
            if _status(exc) == 412 or _error_code(exc) == "PreconditionFailed":
                raise FileExistsError(path) from exc
            raise

    try:
        _retried(uri, deadline, create)
    except StorageError as exc:
        if not isinstance(exc.__cause__, FileExistsError):
            raise
        return read_bytes(uri, max(stop_at - time.monotonic(), 0.1), max_bytes=len(data))
    return None


_warned: set[str] = set()


def _warn_unconditional(uri: str) -> None:
    if scheme(uri) not in _warned:
        _warned.add(scheme(uri))
        print(f"tbpipe: note: {scheme(uri)}:// has no conditional write in tbpipe's table; "
              "create-if-absent (run claims) checks, then writes", file=sys.stderr, flush=True)


def _create_local(path: str, data: bytes) -> bytes | None:
    """Hard-link a complete temporary file to ``path``; None, or what ``path`` already held.

    What it held is read up to ``len(data) + 1`` bytes (enough to compare; a huge file there
    costs no memory) and only from a regular file (a FIFO is refused, never opened).
    """
    with _local_temp(path, data) as tmp:
        try:
            os.link(tmp, path)
        except FileExistsError:  # read what is there: never more than tells equal from not

            check_regular(path, path, folder_ok=False)  # a FIFO there would block the read
            with open(path, "rb") as handle:
                return handle.read(len(data) + 1)
    return None


@contextlib.contextmanager
def _local_temp(path: str, data: bytes | None = None) -> Iterator[str]:
    """Yield a temporary file beside ``path`` (holding ``data``), removed afterwards."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes 0600; the file gets the usual mode (as atomic_dir's folders), so
            # that a model server of another user reads a registry on a shared volume
            os.fchmod(handle.fileno(), 0o666 & ~umask)
            if data is not None:
                handle.write(data)
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """What a listing says of one file: its size, and a token that changes with its content."""

    size: int
    #: The store's ETag or generation (a local file's mtime in ns); "" where none is given.
    version: str = ""


#: The listing fields that change when an object's content does, in order of preference
#: (s3fs and adlfs give an ETag, gcsfs a generation, every one a modification time).
_VERSION_FIELDS = ("ETag", "etag", "generation", "md5Hash", "LastModified", "last_modified",
                   "updated", "mtime", "created")


def list_files(uri: str, max_results: int | None = None,
               deadline: float | None = None) -> list[str]:
    """Paths of the files under ``uri``, relative to it, sorted.

    Locally a file lists as ``[""]``; remote, only objects under the prefix ``uri/`` count.
    """
    names = sorted(list_file_info(uri, deadline))
    return names[:max_results] if max_results is not None else names


def list_file_info(uri: str, deadline: float | None = None) -> dict[str, FileInfo]:
    """The files under ``uri`` (relative paths) with their size and version: one listing.

    Remote, one recursive ``find`` (a paginated listing of the prefix on S3, GCS and Azure,
    whatever the depth); locally a walk. A local file lists as ``{"": ...}``.

    Raises:
        StorageError: the bucket does not exist, or another permanent error.

    """
    if not is_remote(uri):
        root = Path(to_local_path(uri))
        if root.is_file():
            stat = root.stat()
            return {"": FileInfo(stat.st_size, str(stat.st_mtime_ns))}
        found = {}
        for path in root.rglob("*"):
            with contextlib.suppress(OSError):  # gone since the walk saw it
                if path.is_file():
                    stat = path.stat()
                    found[str(path.relative_to(root))] = FileInfo(stat.st_size,
                                                                  str(stat.st_mtime_ns))
        return found
    fs, path = filesystem(uri)
    prefix = path.rstrip("/") + "/"
    fs.invalidate_cache(path)
    try:
        found = _call(uri, deadline, "find", path, detail=True)
    except StorageError as exc:
        if not _was_not_found(exc):
            raise
        found = {}
    if isinstance(found, list):  # adlfs answers a file's path with its name, detail or not
        found = {name: {} for name in found}
    infos = {name[len(prefix):]: FileInfo(int(info.get("size") or 0), _version(info))
             for name, info in found.items()
             if name.startswith(prefix) and not name.endswith("/")
             and info.get("type", "file") != "directory"}
    if not infos:
        _check_bucket(uri, deadline)
    return infos


def _version(info: dict) -> str:
    return next((str(info[field]) for field in _VERSION_FIELDS if info.get(field)), "")


def read_ranges(uris: Sequence[str], starts: Sequence[int], ends: Sequence[int],
                deadline: float | None = None, batch_size: int = 32) -> list[bytes | None]:
    """Read ``uris[i]`` from byte ``starts[i]`` up to ``ends[i]``, many at once.

    Remote (every URI on the store of the first), fsspec's concurrent ``cat_ranges``, at most
    ``batch_size`` requests in flight, one ranged GET each; the reads that failed for a
    transient reason are retried together until the deadline, those done are kept. Locally,
    plain reads.

    Returns:
        Each range's bytes, in order; None for a file that does not exist (any more).

    Raises:
        StorageError: a permanent error on one of them (one line naming it), or
            StorageUnavailable once transient errors outlast ``deadline``.

    """
    out: list[bytes | None] = [None] * len(uris)
    if not uris:
        return out
    if not is_remote(uris[0]):
        for i, (uri, start, end) in enumerate(zip(uris, starts, ends, strict=True)):
            with contextlib.suppress(FileNotFoundError), os_errors(uri, "cannot read"), \
                    open(to_local_path(uri), "rb") as handle:
                handle.seek(start)
                out[i] = handle.read(max(end - start, 0))
        return out
    fs, _ = filesystem(uris[0])
    paths = [fs._strip_protocol(uri) for uri in uris]
    pending = list(range(len(uris)))

    def attempt(left: float) -> None:
        results = _attempt(fs, "cat_ranges", left, [paths[i] for i in pending],
                           [starts[i] for i in pending], [ends[i] for i in pending],
                           batch_size=batch_size, on_error="return")
        failed, transient = [], None
        for i, result in zip(list(pending), results, strict=True):
            if not isinstance(result, BaseException):
                out[i] = bytes(result)
            elif _is_not_found(result) and not _credentials_missing(result):
                out[i] = None
            elif _is_transient(result):
                failed.append(i)
                transient = result
            else:
                raise _storage_error(uris[i], result) from result
        pending[:] = failed
        if transient is not None:
            raise transient

    _retried(uris[pending[0]], _deadline(deadline), attempt)
    return out


def delete_file(uri: str, deadline: float | None = None) -> None:
    """Delete a file or object; one that is already gone is fine (idempotent, so retried)."""
    if is_remote(uri):
        try:
            _call(uri, deadline, "rm_file", filesystem(uri)[1])
        except StorageError as exc:
            if not _was_not_found(exc):
                raise
        return
    with os_errors(uri, "cannot delete"), contextlib.suppress(FileNotFoundError):
        os.unlink(to_local_path(uri))


def upload_file(local_path: str, uri: str, deadline: float | None = None) -> None:
    """Copy a local file to ``uri`` (a local path or a store URI), whole or not at all.

    To a store: one upload (an object appears only complete), retried like write_bytes;
    locally: a temporary sibling, then a rename.
    """
    with os_errors(local_path, "cannot read"):
        open(local_path, "rb").close()  # a missing source is the source's error, not the store's
    if is_remote(uri):
        _call(uri, deadline, "put_file", local_path, filesystem(uri)[1])
        return
    path = to_local_path(uri)
    with os_errors(uri), _local_temp(path) as tmp:
        shutil.copyfile(local_path, tmp)
        os.replace(tmp, path)


def download_file(uri: str, local_path: str, deadline: float | None = None) -> None:
    """Copy ``uri`` to a local file, whole or not at all (a temporary sibling, then a rename)."""
    with os_errors(local_path), _local_temp(local_path) as tmp:
        if is_remote(uri):
            _call(uri, deadline, "get_file", filesystem(uri)[1], tmp)
        else:
            with os_errors(uri, "cannot read"):
                shutil.copyfile(to_local_path(uri), tmp)
        os.replace(tmp, local_path)


@contextlib.contextmanager
def local_input(uri: str) -> Iterator[str]:
    """Yield a local path holding ``uri``'s content (a file or a folder).

    Local paths are yielded as they are; remote objects or prefixes are downloaded to a
    temporary folder that is removed afterwards.
    """
    if not is_remote(uri):
        yield to_local_path(uri)
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
    final = Path(to_local_path(path))
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
        fs, path = filesystem(uri)
        stop_at = time.monotonic() + _deadline(deadline)
        under = [f"{path.rstrip('/')}/{rel}" for rel in list_files(uri, deadline=deadline)]
        delete_file(uri, deadline=max(stop_at - time.monotonic(), 0.1))
        if under:  # one batch request where the store has one (S3, GCS)
            _call(uri, max(stop_at - time.monotonic(), 0.1), "rm", under)
        fs.invalidate_cache(path)
        return
    path = Path(to_local_path(uri))
    with os_errors(uri, "cannot remove"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
