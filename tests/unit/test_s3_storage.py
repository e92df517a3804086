"""s3:// storage against a real local S3 server (moto's server mode, started by the fixtures)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError, StorageUnavailable
from tbpipe.components.common.run_claim import claim_run
from tbpipe.components.common.tensorboard import sink as tb_sink
from tbpipe.components.common.tensorboard.segments import complete_length
from tbpipe.components.common.tensorboard.sink import remote_writer
from tbpipe.components.common.tensorboard.writer import open_writer
from tests.helpers import TBPIPE, environment, free_port, read_scalars, read_tags

pytestmark = pytest.mark.s3

NOT_FOUND = ("s3://no-such-bucket-tbpipe/logs: not found; check that bucket "
             "'no-such-bucket-tbpipe' exists and the path is right")


def download_tree(uri: str, local_dir: Path) -> Path:
    for rel in storage.list_files(uri):
        storage.download_file(storage.join(uri, rel), str(local_dir / rel))
    return local_dir


def test_bytes_round_trip_and_listing(s3_root):
    storage.write_bytes(storage.join(s3_root, "a/one.txt"), b"one")
    storage.write_bytes(storage.join(s3_root, "a/b/two.txt"), b"two")
    assert storage.read_bytes(storage.join(s3_root, "a/one.txt")) == b"one"
    assert storage.list_files(storage.join(s3_root, "a")) == ["b/two.txt", "one.txt"]
    assert storage.list_files(storage.join(s3_root, "a"), max_results=1) == ["b/two.txt"]
    assert storage.exists(storage.join(s3_root, "a/one.txt"))
    assert storage.exists(storage.join(s3_root, "a/b"))  # a prefix with objects
    assert not storage.exists(storage.join(s3_root, "a/none"))
    storage.write_bytes(storage.join(s3_root, "a/one.txt"), b"uno")  # a write replaces
    assert storage.read_bytes(storage.join(s3_root, "a/one.txt")) == b"uno"


def test_remove_deletes_an_object_and_its_prefix(s3_root):
    for rel in ("model/a.bin", "model/sub/b.bin", "model.bak/c.bin"):
        storage.write_bytes(storage.join(s3_root, rel), rel.encode())
    storage.remove(storage.join(s3_root, "model"))
    assert storage.list_files(s3_root) == ["model.bak/c.bin"]  # a sibling prefix stays
    storage.remove(storage.join(s3_root, "model"))  # nothing there: no error
    storage.delete_file(storage.join(s3_root, "model.bak/c.bin"))
    storage.delete_file(storage.join(s3_root, "model.bak/c.bin"))  # gone already: fine
    assert storage.list_files(s3_root) == []


@pytest.mark.slow  # a thousand PUTs: S3 answers at most 1000 keys a page
def test_listing_pages_past_a_thousand_objects(s3_server, s3_root):
    bucket, _, prefix = s3_root.removeprefix("s3://").partition("/")
    client = s3_server.client()
    for i in range(1003):
        client.put_object(Bucket=bucket, Key=f"{prefix}/many/{i:05d}", Body=b"x")
    assert storage.list_files(storage.join(s3_root, "many")) == [f"{i:05d}" for i in range(1003)]


def test_upload_download_and_local_input(s3_root, tmp_path):
    source = tmp_path / "data.csv"
    source.write_text("label,pixel0\n1,0\n")
    uri = storage.join(s3_root, "data", "data.csv")
    storage.upload_file(str(source), uri)
    storage.download_file(uri, str(tmp_path / "out" / "copy.csv"))
    assert (tmp_path / "out" / "copy.csv").read_text() == source.read_text()
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.csv"]  # no temp left
    with storage.local_input(uri) as local:
        assert Path(local).name == "data.csv" and Path(local).read_text() == source.read_text()
    with storage.local_input(storage.join(s3_root, "data")) as folder:
        assert sorted(os.listdir(folder)) == ["data.csv"]
    with pytest.raises(StorageError, match="no such object or prefix"):
        with storage.local_input(storage.join(s3_root, "nothing")):
            pass


def test_create_is_once_only(s3_root):
    uri = storage.join(s3_root, "claim.json")
    storage.create_bytes(uri, b"mine")
    storage.create_bytes(uri, b"mine")  # a retry of a create that landed: fine
    with pytest.raises(StorageError, match="already exists with other content"):
        storage.create_bytes(uri, b"theirs")
    assert storage.read_bytes(uri) == b"mine"


def test_create_race_has_exactly_one_winner(s3_root):
    uri = storage.join(s3_root, "race.json")
    outcomes: dict[int, str] = {}
    start = threading.Barrier(8)

    def contender(i: int) -> None:
        start.wait()
        try:
            storage.create_bytes(uri, f"owner {i}".encode())
            outcomes[i] = "won"
        except StorageError:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(winners) == 1 and len(outcomes) == 8, outcomes
    assert storage.read_bytes(uri) == f"owner {winners[0]}".encode()


def test_run_claims_on_s3(s3_root):
    claim_run(s3_root, "exp", "r1", "job-a")
    claim_run(s3_root, "exp", "r1", "job-a")  # the same job again (a retried step)
    with pytest.raises(InputError, match="claimed by job-a"):
        claim_run(s3_root, "exp", "r1", "job-b")
    claim_run(s3_root, "exp", "r1", "job-b", resume=True)
    marker = storage.join(s3_root, "exp/r1/_run.json")
    assert json.loads(storage.read_bytes(marker)) == {"owner": "job-b"}


def test_a_bad_bucket_name_is_one_line(s3_server):
    with pytest.raises(StorageError) as caught:
        storage.read_bytes("s3://Bad_Bucket!/x")
    assert "\n" not in str(caught.value) and str(caught.value).startswith(
        "s3://Bad_Bucket!/x: storage error: ")


def test_missing_bucket_and_object_are_one_line(s3_server):
    with pytest.raises(StorageError) as caught:
        storage.list_files("s3://no-such-bucket-tbpipe/logs")
    assert str(caught.value) == NOT_FOUND
    with pytest.raises(StorageError) as caught:
        storage.exists("s3://no-such-bucket-tbpipe/logs")
    assert str(caught.value) == NOT_FOUND
    with pytest.raises(StorageError, match="not found"):
        storage.read_bytes(s3_server.uri("no", "such", "object"))


def test_unreachable_endpoint_is_retried_then_one_line(s3_server):
    closed = f"http://127.0.0.1:{free_port()}"
    storage.reset_filesystems()
    try:
        with environment({"AWS_ENDPOINT_URL": closed}):
            with pytest.raises(StorageUnavailable) as caught:
                storage.read_bytes(s3_server.uri("x"), deadline=1.5)
    finally:
        storage.reset_filesystems()
    assert str(caught.value).startswith(f"{s3_server.uri('x')}: storage unreachable (")
    assert "retried with backoff" in str(caught.value)


class FlakyProxy:
    """A TCP proxy to the S3 server that drops its first ``drops`` connections (an outage).

    Counted, not timed: on a loaded machine the outage still spans several attempts.
    """

    def __init__(self, target_port: int, drops: int) -> None:
        self.target_port, self.drops = target_port, drops
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.dropped < self.drops:
                self.dropped += 1
                client.close()  # the request dies mid-connection, as in an outage
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def test_a_short_outage_is_retried_within_the_deadline(s3_server, s3_root):
    proxy = FlakyProxy(s3_server.port, drops=3)
    uri = storage.join(s3_root, "after-outage.txt")
    storage.reset_filesystems()
    try:
        with environment({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}):
            storage.write_bytes(uri, b"landed", deadline=30)  # waits the outage out
            storage.create_bytes(storage.join(s3_root, "claim"), b"once", deadline=30)
    finally:
        proxy.close()
        storage.reset_filesystems()
    assert proxy.dropped == 3  # the outage was real: three attempts failed before one landed
    assert storage.read_bytes(uri) == b"landed"


def test_no_credentials_is_one_line(s3_server, tmp_path):
    storage.reset_filesystems()
    nowhere = str(tmp_path / "none")
    try:
        with environment({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                          "AWS_SHARED_CREDENTIALS_FILE": nowhere, "AWS_CONFIG_FILE": nowhere,
                          "AWS_EC2_METADATA_DISABLED": "true"}):
            os.environ.pop("AWS_ACCESS_KEY_ID")
            os.environ.pop("AWS_SECRET_ACCESS_KEY")
            with pytest.raises(StorageError) as caught:
                storage.read_bytes(s3_server.uri("x"))
    finally:
        storage.reset_filesystems()
    assert str(caught.value) == (f"{s3_server.uri('x')}: no AWS credentials found; set "
                                 "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile "
                                 "or role)")


def test_denied_requests_are_one_line(s3_server, s3_auth_server):
    server, key_id, secret = s3_auth_server
    storage.reset_filesystems()
    try:
        with environment(server.env(key_id, secret)):
            storage.write_bytes("s3://tbpipe-allowed/ok", b"ok")  # the user's own bucket
            assert storage.read_bytes("s3://tbpipe-allowed/ok") == b"ok"
            with pytest.raises(StorageError) as denied:
                storage.write_bytes("s3://tbpipe-denied/x", b"x")
        storage.reset_filesystems()
        with environment(server.env(key_id, "a-wrong-secret")):
            with pytest.raises(StorageError) as wrong_secret:
                storage.read_bytes("s3://tbpipe-allowed/ok")
    finally:
        storage.reset_filesystems()
    assert str(denied.value) == (
        "s3://tbpipe-denied/x: permission denied (403 AccessDenied); check AWS_ACCESS_KEY_ID / "
        "AWS_SECRET_ACCESS_KEY and the bucket's policy for the step's identity")
    assert str(wrong_secret.value).startswith(
        "s3://tbpipe-allowed/ok: permission denied (403 SignatureDoesNotMatch)")


def test_sink_publishes_segments_read_back_as_events(s3_server, s3_root, tmp_path,
                                                     monkeypatch):
    """The live sink on s3://: whole-record segments, only new bytes sent, every step once."""
    uri = storage.join(s3_root, "exp/run/train")
    sent: list[int] = []

    def count(request, **_: object) -> None:
        sent.append(int(request.headers.get("Content-Length", 0)))

    from fsspec.asyn import sync

    fs, _ = storage.filesystem(uri)  # the cached s3fs instance the sink uses: count its PUTs
    client = sync(fs.loop, fs.set_session)
    client.meta.events.register("before-send.s3.PutObject", count, unique_id="count")
    rng = np.random.default_rng(0)
    try:
        with remote_writer(uri, flush_secs=1, compact=False) as writer:  # the live segments
            for step in range(1500):
                writer.add_scalar("loss", float(rng.random()), step)
                if step % 100 == 0:
                    writer.add_histogram("weights", rng.normal(size=256), step)
                if step % 500 == 499:
                    time.sleep(1.5)  # a few flush intervals: several segments
    finally:
        storage.reset_filesystems()  # new clients, without the counter
    names = storage.list_files(uri)
    segments = [storage.read_bytes(storage.join(uri, n)) for n in names]
    logged = sum(len(s) for s in segments)
    assert len(segments) >= 3 and writer.report.published_bytes == logged
    assert all(complete_length(s) == len(s) for s in segments)  # whole records only
    assert 1.0 <= sum(sent) / logged <= 1.1, (sum(sent), logged)
    local = download_tree(uri, tmp_path / "copy")
    assert [s for s, _ in read_scalars(str(local))["loss"]] == list(range(1500))
    assert "weights" in read_tags(str(local))["histograms"]


def test_a_closed_writer_leaves_one_compacted_object(s3_root, tmp_path, monkeypatch):
    monkeypatch.setattr(tb_sink, "COMPACT_GRACE_S", 0.0)  # no reader to wait for here
    uri = storage.join(s3_root, "compact/run/train")
    with open_writer(uri, flush_secs=1) as writer:
        for step in range(300):
            writer.add_scalar("loss", float(step), step)
            if step % 100 == 99:
                time.sleep(1.5)  # a flush interval: one more segment
    assert writer.report.segments >= 2
    assert writer.report.compacted_segments == writer.report.segments
    (name,) = storage.list_files(uri)
    assert name.endswith(".compacted")
    local = download_tree(uri, tmp_path / "copy")
    assert [s for s, _ in read_scalars(str(local))["loss"]] == list(range(300))  # each once


def test_sink_on_a_missing_bucket_fails_at_open(s3_server):
    with pytest.raises(StorageError) as caught:
        with open_writer("s3://no-such-bucket-tbpipe/exp/run/train") as writer:
            writer.add_scalar("loss", 1.0, 0)
    assert "no-such-bucket-tbpipe" in str(caught.value) and "not found" in str(caught.value)


def test_tensorboard_cli_missing_bucket_is_one_line(s3_server):
    proc = subprocess.run([*TBPIPE, "tensorboard", "--log-root",
                           "s3://no-such-bucket-tbpipe/logs", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"tbpipe: error: {NOT_FOUND}"]
