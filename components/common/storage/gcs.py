"""The gs:// half of :mod:`tbpipe.components.common.storage`: client, retry policy, errors, objects.

GCS goes through google-cloud-storage; credentials come only from the environment (ADC,
Workload Identity), ``STORAGE_EMULATOR_HOST`` points it at an emulator. Transient errors
(429, 5xx, dropped connections) are retried with backoff for up to ``deadline`` seconds
(google-cloud-storage's retry policy; a create that could duplicate is conditional on
generation 0). Permanent errors (no bucket, no permission) fail at once as one
:class:`StorageError` line naming the URI.

Use :mod:`tbpipe.components.common.storage` (local paths and gs:// alike); it chooses the default
deadline and passes it to the object functions here.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

from tbpipe.components.common.errors import StorageError, StorageUnavailable

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


@functools.cache
def gcs_client():  # noqa: ANN201 - google.cloud.storage.Client, imported lazily
    """Return the process-wide GCS client (honours ``STORAGE_EMULATOR_HOST``)."""
    from google.cloud import storage

    return storage.Client()


def reset_gcs_client() -> None:
    """Forget the cached client, e.g. after ``STORAGE_EMULATOR_HOST`` changed."""
    gcs_client.cache_clear()


def blob(uri: str):  # noqa: ANN201 - google.cloud.storage.Blob, imported lazily
    """Return the blob (object handle) that ``uri`` names; nothing is fetched."""
    bucket, name = split_gcs(uri)
    return gcs_client().bucket(bucket).blob(name)


def call_options(deadline: float) -> dict:
    """Keyword arguments for one GCS call: the retry policy and a per-request HTTP timeout."""
    from google.cloud.storage.retry import DEFAULT_RETRY

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


def object_exists(uri: str, deadline: float) -> bool:
    """Whether ``uri`` is an object, or a prefix with objects under it."""
    with gcs_errors(uri):
        if split_gcs(uri)[1] and blob(uri).exists(**call_options(deadline)):
            return True
    return bool(list_objects(uri, deadline, max_results=1))


def read_object(uri: str, deadline: float) -> bytes:
    """Return the whole content of the object ``uri``."""
    with gcs_errors(uri):
        return blob(uri).download_as_bytes(**call_options(deadline))


def write_object(uri: str, data: bytes, deadline: float) -> None:
    """Upload ``data`` as the object ``uri`` in one request (idempotent, so retried)."""
    with gcs_errors(uri):
        blob(uri).upload_from_string(data, **call_options(deadline))


def create_object(uri: str, data: bytes, deadline: float) -> bytes | None:
    """Create the object ``uri`` holding ``data`` only if it does not exist yet.

    The upload is conditional on generation 0, so retries cannot duplicate or overwrite.

    Returns:
        None if this call created the object, else the content the object already had
        (e.g. an earlier attempt landed but its reply was lost).

    """
    from google.api_core import exceptions as gexc
    from google.cloud.storage.retry import ConditionalRetryPolicy, is_generation_specified

    options = call_options(deadline)
    options["retry"] = ConditionalRetryPolicy(options["retry"], is_generation_specified,
                                              ["query_params"])
    with gcs_errors(uri):
        try:
            blob(uri).upload_from_string(data, if_generation_match=0, **options)
        except gexc.PreconditionFailed:
            return blob(uri).download_as_bytes(**call_options(deadline))
    return None


def list_objects(uri: str, deadline: float, max_results: int | None = None) -> list[str]:
    """Names of the objects under the prefix ``uri``, relative to it, sorted."""
    bucket, prefix = split_gcs(uri)
    prefix = f"{prefix}/" if prefix else ""
    with gcs_errors(uri):
        blobs = gcs_client().list_blobs(bucket, prefix=prefix, max_results=max_results,
                                        **call_options(deadline))
        return sorted(b.name[len(prefix):] for b in blobs if not b.name.endswith("/"))


def delete_object(uri: str, deadline: float) -> None:
    """Delete the object ``uri``; one already gone is fine (a retried delete landed)."""
    from google.api_core import exceptions as gexc

    with gcs_errors(uri):
        try:
            blob(uri).delete(**call_options(deadline))
        except gexc.NotFound:
            pass


def upload_object(local_path: str, uri: str, deadline: float) -> None:
    """Upload the local file ``local_path`` as the object ``uri`` (retried like writes)."""
    with gcs_errors(uri):
        blob(uri).upload_from_filename(local_path, **call_options(deadline))


def download_object(uri: str, local_path: str, deadline: float) -> None:
    """Download the object ``uri`` to the local file ``local_path``."""
    with gcs_errors(uri):
        blob(uri).download_to_filename(local_path, **call_options(deadline))


def delete_objects(uri: str, deadline: float) -> None:
    """Delete the object ``uri`` and every object under the prefix ``uri/`` (none: no-op)."""
    from google.api_core import exceptions as gexc

    names = [uri] + [f"{uri.rstrip('/')}/{rel}" for rel in list_objects(uri, deadline)]
    for name in names:
        with gcs_errors(name), contextlib.suppress(gexc.NotFound):
            blob(name).delete(**call_options(deadline))
