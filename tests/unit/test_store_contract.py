"""One storage contract, the same on three stores: gs:// (gcp-storage-emulator), s3:// (moto)
and az:// (Azurite), the last with no tbpipe code of its own (fsspec's adlfs)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.errors import StorageError

STORES = [pytest.param("gcs_root", marks=pytest.mark.gcs, id="gs"),
          pytest.param("s3_root", marks=pytest.mark.s3, id="s3"),
          pytest.param("az_root", marks=pytest.mark.azure, id="az")]


@pytest.fixture(params=STORES)
def root(request: pytest.FixtureRequest) -> str:
    """A fresh prefix on each store in turn."""
    return request.getfixturevalue(request.param)


def test_bytes_listing_exists_and_remove(root):
    storage.write_bytes(storage.join(root, "a/one.txt"), b"one")
    storage.write_bytes(storage.join(root, "a/b/two.txt"), b"two")
    storage.write_bytes(storage.join(root, "a/empty"), b"")
    storage.write_bytes(storage.join(root, "a.bak/three.txt"), b"three")
    assert storage.read_bytes(storage.join(root, "a/one.txt")) == b"one"
    assert storage.read_bytes(storage.join(root, "a/empty")) == b""
    assert storage.list_files(storage.join(root, "a")) == ["b/two.txt", "empty", "one.txt"]
    assert storage.list_files(storage.join(root, "a"), max_results=1) == ["b/two.txt"]
    assert storage.exists(storage.join(root, "a/b"))  # a prefix with objects
    assert not storage.exists(storage.join(root, "a/none"))
    storage.write_bytes(storage.join(root, "a/one.txt"), b"uno")  # a write replaces
    assert storage.read_bytes(storage.join(root, "a/one.txt")) == b"uno"
    storage.remove(storage.join(root, "a"))
    assert storage.list_files(root) == ["a.bak/three.txt"]  # a sibling prefix stays
    storage.remove(storage.join(root, "a"))  # nothing there: no error
    storage.delete_file(storage.join(root, "a.bak/three.txt"))
    storage.delete_file(storage.join(root, "a.bak/three.txt"))  # gone already: fine
    assert storage.list_files(root) == []


def test_upload_and_download_are_whole_and_leave_no_temp(root, tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("label,pixel0\n1,0\n")
    uri = storage.join(root, "data", "data.csv")
    storage.upload_file(str(source), uri)
    out = tmp_path / "out"
    storage.download_file(uri, str(out / "copy.csv"))
    assert (out / "copy.csv").read_text() == source.read_text()
    with pytest.raises(StorageError, match="not found"):
        storage.download_file(storage.join(root, "data", "missing.csv"), str(out / "x.csv"))
    assert os.listdir(out) == ["copy.csv"]  # no partial file, no temporary left
    with storage.local_input(uri) as local:
        assert Path(local).read_text() == source.read_text()
    with pytest.raises(StorageError, match="cannot read"):  # the source's error, named as such
        storage.upload_file(str(tmp_path / "nothing.csv"), uri)


def test_create_is_once_only_and_a_race_has_one_winner(root):
    uri = storage.join(root, "claim.json")
    storage.create_bytes(uri, b"mine")
    storage.create_bytes(uri, b"mine")  # a retry of a create that landed: fine
    if root.startswith("gs://"):
        # The emulator ignores GCS's generation precondition (real GCS enforces it); the
        # 412 path is covered in test_storage.py::test_gcs_create_bytes_after_lost_reply.
        return
    with pytest.raises(StorageError, match="already exists with other content"):
        storage.create_bytes(uri, b"theirs")
    assert storage.read_bytes(uri) == b"mine"
    race = storage.join(root, "race.json")
    outcomes: dict[int, str] = {}
    start = threading.Barrier(6)

    def contender(i: int) -> None:
        start.wait()
        try:
            storage.create_bytes(race, f"owner {i}".encode())
            outcomes[i] = "won"
        except StorageError:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1 and len(outcomes) == 6, outcomes
    assert storage.read_bytes(race) == f"owner {winners[0]}".encode()


def test_a_missing_bucket_is_one_line_at_once(root):
    scheme = root.split("://")[0]
    uri = f"{scheme}://no-such-bucket-tbpipe/logs"
    for call in (lambda: storage.list_files(uri), lambda: storage.exists(uri),
                 lambda: storage.read_bytes(uri)):
        with pytest.raises(StorageError) as caught:
            call()
        assert str(caught.value) == (f"{uri}: not found; check that bucket "
                                     "'no-such-bucket-tbpipe' exists and the path is right")


def test_is_remote_is_any_scheme_but_file():
    assert storage.is_remote("az://c/x") and storage.is_remote("abfs://c/x")
    assert storage.is_remote("memory://x") and storage.is_remote("gs://b")
    assert not storage.is_remote("/tmp/x") and not storage.is_remote("file:///tmp/x")
    assert storage.supports_conditional_create("az://c/x")
    assert not storage.supports_conditional_create("memory://x")
    with pytest.raises(StorageError, match="fsspec knows no store for nosuch://"):
        storage.read_bytes("nosuch://bucket/x")


def test_a_store_without_conditional_writes_checks_then_writes(capsys):
    """memory:// (fsspec's in-process store) stands for any scheme tbpipe has no table entry
    for: everything works, and create-if-absent says it is a check, then a write."""
    root = "memory://tbpipe-contract"
    storage.create_bytes(storage.join(root, "exp/run/_run.json"), b"mine")
    storage.create_bytes(storage.join(root, "exp/run/_run.json"), b"mine")
    with pytest.raises(StorageError, match="already exists with other content"):
        storage.create_bytes(storage.join(root, "exp/run/_run.json"), b"theirs")
    assert "checks, then writes" in capsys.readouterr().err
    storage.write_bytes(storage.join(root, "exp/run/train/a"), b"a")
    assert storage.list_files(storage.join(root, "exp")) == ["run/_run.json", "run/train/a"]
    storage.remove(storage.join(root, "exp"))
    assert not storage.exists(storage.join(root, "exp"))


@pytest.mark.azure
def test_an_unreachable_azure_endpoint_is_retried_within_the_deadline(azurite):
    """azure-core retries on its own (up to minutes of backoff); the deadline bounds it all."""
    import time

    from tbpipe.components.common.errors import StorageUnavailable
    from tests.helpers import environment, free_port

    closed = azurite.env()["AZURE_STORAGE_CONNECTION_STRING"].replace(
        str(azurite.port), str(free_port()))
    uri = azurite.uri("x")
    storage.reset_filesystems()
    try:
        with environment({"AZURE_STORAGE_CONNECTION_STRING": closed}):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as caught:
                storage.read_bytes(uri, deadline=3)
            took = time.monotonic() - started
    finally:
        storage.reset_filesystems()
    assert 1 <= took < 10, took  # it kept trying for most of the deadline, and no longer
    assert str(caught.value).startswith(f"{uri}: storage unreachable (")
