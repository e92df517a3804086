"""The storage layer on local paths and on a real local GCS server (gcp-storage-emulator)."""

from __future__ import annotations

import threading
import time

import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.errors import StorageError, StorageUnavailable


def test_local_round_trip_and_atomic_write(tmp_path):
    target = str(tmp_path / "a" / "b.bin")
    storage.write_bytes(target, b"one")
    storage.write_bytes(target, b"two")
    assert storage.read_bytes(target) == b"two"
    assert storage.exists(target) and not storage.exists(str(tmp_path / "nope"))
    assert storage.list_files(str(tmp_path)) == ["a/b.bin"]  # no temp files left behind


def test_local_create_bytes_never_overwrites(tmp_path):
    target = str(tmp_path / "seg.000000")
    storage.create_bytes(target, b"abc")
    storage.create_bytes(target, b"abc")  # a retry of a create that landed: fine
    with pytest.raises(StorageError, match="already exists with other content"):
        storage.create_bytes(target, b"xyz")
    assert storage.read_bytes(target) == b"abc"


def test_local_read_missing_names_the_path(tmp_path):
    with pytest.raises(StorageError, match=str(tmp_path / "missing")):
        storage.read_bytes(str(tmp_path / "missing"))


@pytest.mark.gcs
@pytest.mark.parametrize("last", [b"\r", b"\r\n", b"\n", b"\n\n", b"--==0==", b"x"])
def test_gcs_keeps_every_byte_whatever_the_object_ends_with(gcs_root, last):
    """Small objects go up in one multipart request; the tests' emulator is mended to keep a
    final 0x0D (tests/gcs_emulator.py: as released it stored such an object one byte short)."""
    data = bytes(range(256)) + last
    uri = storage.join(gcs_root, "tail", "object")
    storage.write_bytes(uri, data)
    assert storage.read_bytes(uri) == data


@pytest.mark.gcs
def test_gcs_round_trip(gcs_root, tmp_path):
    storage.write_bytes(storage.join(gcs_root, "x", "a.txt"), b"hello")
    local = tmp_path / "b.txt"
    local.write_bytes(b"world")
    storage.upload_file(str(local), storage.join(gcs_root, "x", "y", "b.txt"))
    assert storage.read_bytes(storage.join(gcs_root, "x/a.txt")) == b"hello"
    assert storage.list_files(gcs_root) == ["x/a.txt", "x/y/b.txt"]
    assert storage.exists(storage.join(gcs_root, "x/y"))  # a prefix with objects
    assert not storage.exists(storage.join(gcs_root, "nothing"))
    storage.download_file(storage.join(gcs_root, "x/y/b.txt"), str(tmp_path / "c.txt"))
    assert (tmp_path / "c.txt").read_bytes() == b"world"
    with storage.local_input(storage.join(gcs_root, "x")) as folder:
        assert (tmp_path / folder / "y" / "b.txt").read_bytes() == b"world"


@pytest.mark.gcs
def test_gcs_create_bytes_is_create_once(gcs_root):
    uri = storage.join(gcs_root, "seg.000000")
    storage.create_bytes(uri, b"records")
    storage.create_bytes(uri, b"records")
    assert storage.read_bytes(uri) == b"records"


@pytest.mark.gcs
def test_gcs_create_bytes_after_lost_reply(gcs_root, monkeypatch):
    """A retried create answered 412: the object from the first attempt is accepted if equal.

    (The emulator does not enforce generation preconditions, so the 412 real GCS sends is
    simulated here; the object itself is real.)
    """
    from gcsfs import GCSFileSystem
    from gcsfs.retry import validate_response

    uri = storage.join(gcs_root, "seg.000001")
    storage.write_bytes(uri, b"first attempt landed")
    calls = []

    async def precondition_failed(self, path, data, **kwargs):
        calls.append(kwargs)
        validate_response(412, b'{"error": {"message": "conditionNotMet"}}', path)

    monkeypatch.setattr(GCSFileSystem, "_pipe_file", precondition_failed)
    storage.create_bytes(uri, b"first attempt landed")
    assert calls[0]["mode"] == "create"  # gcsfs sends ifGenerationMatch=0
    with pytest.raises(StorageError, match="already exists with other content"):
        storage.create_bytes(uri, b"something else")


@pytest.mark.gcs
@pytest.mark.parametrize("call", ["read", "write", "list"])
def test_gcs_missing_bucket_fails_at_once_naming_the_uri(gcs_emulator, call):
    uri = "gs://no-such-bucket-tbpipe/some/path"
    action = {"read": lambda: storage.read_bytes(uri),
              "write": lambda: storage.write_bytes(uri, b"x"),
              "list": lambda: storage.list_files(uri)}[call]
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        action()
    assert time.monotonic() - started < 5  # permanent: no retry loop
    message = str(info.value)
    assert uri in message and "no-such-bucket-tbpipe" in message and "\n" not in message
    assert not isinstance(info.value, StorageUnavailable)


@pytest.mark.gcs
def test_gcs_transient_outage_is_retried(gcs_emulator, gcs_root):
    uri = storage.join(gcs_root, "survives.txt")
    storage.write_bytes(uri, b"still here")
    gcs_emulator.stop()
    restart = threading.Timer(2.0, gcs_emulator.start)
    restart.start()
    try:
        started = time.monotonic()
        assert storage.read_bytes(uri, deadline=60) == b"still here"
        storage.write_bytes(storage.join(gcs_root, "after.txt"), b"ok", deadline=60)
        assert time.monotonic() - started >= 1.5  # it waited for the server, then succeeded
    finally:
        restart.join()
    assert storage.read_bytes(storage.join(gcs_root, "after.txt")) == b"ok"


@pytest.mark.gcs
def test_gcs_outage_longer_than_deadline_fails_clearly(gcs_emulator, gcs_root):
    uri = storage.join(gcs_root, "x.txt")
    with gcs_emulator.outage():
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="storage unreachable") as info:
            storage.read_bytes(uri, deadline=2)
        assert time.monotonic() - started < 10
    assert uri in str(info.value) and "\n" not in str(info.value)


def test_gcs_permission_denied_is_one_clear_line(monkeypatch):
    from gcsfs import GCSFileSystem
    from gcsfs.retry import validate_response

    async def forbidden(self, path, *args, **kwargs):  # what gcsfs makes of GCS's 403
        validate_response(403, b'{"error": {"message": "denied"}}', path)

    monkeypatch.setattr(GCSFileSystem, "_cat_file", forbidden)
    with pytest.raises(StorageError, match=r"gs://b/p: permission denied \(403\)"):
        storage.read_bytes("gs://b/p")


def test_gcs_missing_credentials_is_one_clear_line(monkeypatch):
    from gcsfs import GCSFileSystem
    from google.auth.exceptions import DefaultCredentialsError

    async def no_credentials(self, *args, **kwargs):  # token="google_default", none found
        raise DefaultCredentialsError("Your default credentials were not found")

    monkeypatch.setattr(GCSFileSystem, "_find", no_credentials)
    with pytest.raises(StorageError, match="gs://b/p: no Google credentials found"):
        storage.list_files("gs://b/p")


def test_gcs_anonymous_fallback_reads_as_missing_credentials(monkeypatch):
    """gcsfs finding no credentials goes on anonymously; GCS then answers 401."""
    from gcsfs import GCSFileSystem
    from gcsfs.retry import validate_response

    async def anonymous(self, path, *args, **kwargs):
        validate_response(401, b'{"error": {"code": 401, "message": "Anonymous caller does '
                               b'not have storage.objects.get access to the object."}}', path)

    monkeypatch.setattr(GCSFileSystem, "_cat_file", anonymous)
    with pytest.raises(StorageError) as caught:
        storage.read_bytes("gs://b/p", deadline=2)
    assert str(caught.value) == ("gs://b/p: no Google credentials found; use Application "
                                 "Default Credentials or Workload Identity")


def test_create_bytes_reads_what_is_there_bounded_and_never_from_a_fifo(tmp_path):
    """A claim path that exists is compared, not slurped: a FIFO is refused, a huge file is
    read only as far as tells it differs."""
    import os
    import tracemalloc

    from tbpipe.components.common.errors import InputError

    fifo = tmp_path / "_run.json"
    os.mkfifo(fifo)
    outcome = []

    def create() -> None:
        try:
            storage.create_bytes(str(fifo), b"{}")
        except (InputError, StorageError) as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=create, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "create_bytes blocked on a FIFO"
    assert outcome and "FIFO" in outcome[0]
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as handle:
        handle.truncate(1 << 30)  # 1 GiB, sparse: reading it whole would show in memory
    tracemalloc.start()
    try:
        with pytest.raises(StorageError, match="already exists with other content"):
            storage.create_bytes(str(huge), b"{}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"read {peak} bytes to compare a 2-byte claim"


def test_a_kfp_artifact_path_of_another_pod_is_read_from_its_store(tmp_path, monkeypatch):
    """A step records the path KFP gave it (``/gcs/b/x``); another run's pod reads ``gs://b/x``."""
    from tbpipe.components.common.storage import artifact_uri

    assert artifact_uri("/gcs/bucket/run-1/preprocess/train_data") == \
        "gs://bucket/run-1/preprocess/train_data"
    assert artifact_uri("/s3/bucket/a/test_data") == "s3://bucket/a/test_data"
    assert artifact_uri("/minio/mlpipeline/v2/artifacts/x") == "s3://mlpipeline/v2/artifacts/x"
    assert artifact_uri("minio://mlpipeline/v2/artifacts/x") == "s3://mlpipeline/v2/artifacts/x"
    assert artifact_uri(str(tmp_path)) == str(tmp_path)  # a local path stays one
    assert artifact_uri("gs://bucket/x") == "gs://bucket/x"
    monkeypatch.setattr("os.path.exists", lambda path: path == "/gcs/b/here")
    assert artifact_uri("/gcs/b/here") == "/gcs/b/here"  # mounted in this pod: read it there
