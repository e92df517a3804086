"""The s3:// half of :mod:`tbpipe.components.common.storage`: client, retry policy, errors, objects.

S3 (AWS, MinIO, any S3-compatible store) goes through boto3 with its standard environment:
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or a profile or role), ``AWS_ENDPOINT_URL``
for MinIO or another server, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``. Transient errors (429,
5xx, ``SlowDown``, dropped connections, timeouts) are retried here with exponential backoff
for up to ``deadline`` seconds (botocore's own retries are off, so the deadline bounds the
whole call, as on gs://); a create that could duplicate is conditional (``If-None-Match: *``).
Permanent errors (no bucket, no object, access denied, no credentials) fail at once as one
:class:`StorageError` line naming the URI.

Use :mod:`tbpipe.components.common.storage` (local paths, gs:// and s3:// alike); it chooses
the default deadline and passes it to the object functions here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from tbpipe.components.common.errors import StorageError, StorageUnavailable, os_errors

S3_SCHEME = "s3://"
MAX_BACKOFF_S = 10.0
# Error codes S3 (and MinIO) answer for conditions that pass: retried until the deadline.
TRANSIENT_CODES = frozenset({
    "RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "Throttling", "ThrottlingException",
    "TooManyRequests", "InternalError", "ServiceUnavailable", "OperationAborted",
    "ConditionalRequestConflict",
})
DENIED_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "InvalidToken", "ExpiredToken", "AccountProblem",
})

T = TypeVar("T")


def is_s3(uri: str) -> bool:
    """Whether ``uri`` names an S3 location."""
    return uri.startswith(S3_SCHEME)


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, key = uri[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: an s3:// URI needs a bucket name, e.g. s3://my-bucket/path")
    return bucket, key.strip("/")


@functools.cache
def s3_client(timeout: float = 60.0):  # noqa: ANN201 - botocore S3 client, imported lazily
    """Return a process-wide S3 client whose requests time out after ``timeout`` seconds.

    boto3 reads credentials and ``AWS_ENDPOINT_URL`` from the environment; the region is
    ``AWS_REGION``, else boto3's own (``AWS_DEFAULT_REGION``, the profile). botocore retries
    nothing: :func:`_retried` retries transient errors until the call's deadline.
    """
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"total_max_attempts": 1})
    session = boto3.session.Session()
    return session.client("s3", region_name=os.environ.get("AWS_REGION") or None,
                          config=config)


def reset_s3_client() -> None:
    """Forget the cached clients, e.g. after ``AWS_ENDPOINT_URL`` or credentials changed."""
    s3_client.cache_clear()


def _client(deadline: float):  # noqa: ANN202 - botocore S3 client
    return s3_client(float(min(60.0, max(deadline, 1.0))))


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: BaseException) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is_transient(exc: BaseException) -> bool:
    from botocore import exceptions as bexc

    if isinstance(exc, (bexc.EndpointConnectionError, bexc.ConnectionClosedError,
                        bexc.ReadTimeoutError, bexc.ConnectTimeoutError,
                        bexc.ResponseStreamingError, ConnectionError)):
        return True
    if isinstance(exc, bexc.ClientError):
        return _error_code(exc) in TRANSIENT_CODES or _status(exc) in (429, 500, 502, 503, 504)
    return False


def _retried(call: Callable[[], T], deadline: float) -> T:
    """Run ``call``, retrying transient errors with jittered backoff for ``deadline`` seconds."""
    give_up = time.monotonic() + deadline
    delay = 0.25
    while True:
        try:
            return call()
        except Exception as exc:
            pause = delay * (0.5 + random.random() / 2)
            if not _is_transient(exc) or time.monotonic() + pause > give_up:
                raise
        time.sleep(pause)
        delay = min(delay * 2, MAX_BACKOFF_S)


@contextlib.contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """Turn botocore errors into one StorageError line naming ``uri``."""
    from botocore import exceptions as bexc

    try:
        yield
    except bexc.NoCredentialsError as exc:
        raise StorageError(f"{uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (or a profile or role)") from exc
    except bexc.PartialCredentialsError as exc:
        raise StorageError(f"{uri}: incomplete AWS credentials ({exc}); set both "
                           "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from exc
    except StorageError:
        raise
    except Exception as exc:
        if _is_transient(exc):
            raise StorageUnavailable(f"{uri}: storage unreachable ({_reason(exc)}); "
                                     "retried with backoff, try again later") from exc
        if not isinstance(exc, bexc.BotoCoreError | bexc.ClientError):
            raise
        code, status = _error_code(exc), _status(exc)
        if status == 404 or code in ("NoSuchBucket", "NoSuchKey", "NotFound"):
            raise StorageError(f"{uri}: not found; check that bucket '{split_s3(uri)[0]}' "
                               "exists and the path is right") from exc
        if code in DENIED_CODES or status in (401, 403):
            raise StorageError(f"{uri}: permission denied ({status or code} {code}); check "
                               "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's "
                               "policy for the step's identity") from exc
        raise StorageError(f"{uri}: storage error: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    from botocore import exceptions as bexc

    if isinstance(exc, bexc.EndpointConnectionError | ConnectionError):
        return "connection failed"
    code = _error_code(exc)
    if code:
        return f"{code}: {_first_line(exc)}"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    """The error's text on one line (botocore's validation errors span several)."""
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]


def object_exists(uri: str, deadline: float) -> bool:
    """Whether ``uri`` is an object, or a prefix with objects under it."""
    bucket, key = split_s3(uri)
    if key:
        with s3_errors(uri):
            try:
                _retried(lambda: _client(deadline).head_object(Bucket=bucket, Key=key),
                         deadline)
                return True
            except Exception as exc:
                if _status(exc) != 404:
                    raise
    return bool(list_objects(uri, deadline, max_results=1))


def read_object(uri: str, deadline: float) -> bytes:
    """Return the whole content of the object ``uri``."""
    bucket, key = split_s3(uri)

    def get() -> bytes:
        return _client(deadline).get_object(Bucket=bucket, Key=key)["Body"].read()

    with s3_errors(uri):
        return _retried(get, deadline)


def write_object(uri: str, data: bytes, deadline: float) -> None:
    """Upload ``data`` as the object ``uri`` in one request (idempotent, so retried)."""
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        _retried(lambda: _client(deadline).put_object(Bucket=bucket, Key=key, Body=data),
                 deadline)


def create_object(uri: str, data: bytes, deadline: float) -> bytes | None:
    """Create the object ``uri`` holding ``data`` only if it does not exist yet.

    The upload is conditional (``If-None-Match: *``, S3's conditional write; MinIO and moto
    honour it too), so retries cannot duplicate or overwrite: a retry after a landed attempt
    gets 412 and reads the object back.

    Returns:
        None if this call created the object, else the content the object already had
        (e.g. an earlier attempt landed but its reply was lost).

    """
    bucket, key = split_s3(uri)

    def put() -> None:
        _client(deadline).put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")

    with s3_errors(uri):
        try:
            _retried(put, deadline)
        except Exception as exc:
            if _status(exc) != 412 and _error_code(exc) != "PreconditionFailed":
                raise
            return read_object(uri, deadline)
    return None


def list_objects(uri: str, deadline: float, max_results: int | None = None) -> list[str]:
    """Names of the objects under the prefix ``uri``, relative to it, sorted."""
    bucket, prefix = split_s3(uri)
    prefix = f"{prefix}/" if prefix else ""

    def page(token: str | None) -> dict:
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        if max_results is not None:
            kwargs["MaxKeys"] = max_results
        return _client(deadline).list_objects_v2(**kwargs)

    names: list[str] = []
    token = None
    with s3_errors(uri):
        while True:
            reply = _retried(lambda token=token: page(token), deadline)
            names += [item["Key"] for item in reply.get("Contents", [])]
            token = reply.get("NextContinuationToken")
            if not token or (max_results is not None and len(names) >= max_results):
                break
    names = [n[len(prefix):] for n in names if not n.endswith("/")]
    return sorted(names)[:max_results] if max_results is not None else sorted(names)


def delete_object(uri: str, deadline: float) -> None:
    """Delete the object ``uri``; one already gone is fine (S3 answers a missing key alike)."""
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        _retried(lambda: _client(deadline).delete_object(Bucket=bucket, Key=key), deadline)


def delete_objects(uri: str, deadline: float) -> None:
    """Delete the object ``uri`` and every object under the prefix ``uri/`` (none: no-op)."""
    bucket, key = split_s3(uri)
    keys = [key] + [f"{key.rstrip('/')}/{rel}" for rel in list_objects(uri, deadline)]
    for start in range(0, len(keys), 1000):  # DeleteObjects takes up to 1000 keys
        batch = [{"Key": k} for k in keys[start:start + 1000]]
        with s3_errors(uri):  # a missing key is no error for DeleteObjects
            _retried(lambda batch=batch: _client(deadline).delete_objects(
                Bucket=bucket, Delete={"Objects": batch, "Quiet": True}), deadline)


def upload_object(local_path: str, uri: str, deadline: float) -> None:
    """Upload the local file ``local_path`` as the object ``uri`` (retried like writes)."""
    bucket, key = split_s3(uri)

    def put() -> None:
        with open(local_path, "rb") as body:
            _client(deadline).put_object(Bucket=bucket, Key=key, Body=body)

    with s3_errors(uri):
        try:
            _retried(put, deadline)
        except OSError as exc:
            if exc.filename != local_path:
                raise
            raise StorageError.from_os_error(local_path, exc, "cannot read") from exc


def download_object(uri: str, local_path: str, deadline: float) -> None:
    """Download the object ``uri`` to ``local_path`` (a temporary sibling, then a rename)."""
    bucket, key = split_s3(uri)
    folder = os.path.dirname(os.path.abspath(local_path))

    def get() -> None:
        reply = _client(deadline).get_object(Bucket=bucket, Key=key)
        with os_errors(local_path):
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(local_path)}.",
                                       suffix=".partial", dir=folder)
        try:
            with os_errors(local_path), os.fdopen(fd, "wb") as handle:
                for chunk in reply["Body"].iter_chunks(1 << 20):
                    handle.write(chunk)
                handle.close()
                os.replace(tmp, local_path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    with s3_errors(uri):
        _retried(get, deadline)

