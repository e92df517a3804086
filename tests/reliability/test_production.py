"""Production is sacred: kills at every storage call, overlapping promotions, user files, targets.

The promotion protocol (``components/promotion/publish.py``) runs on local disk and on the
gs://, s3:// and az:// emulators (on Azurite the kill test takes about 27 s, as on moto's
S3; the overlap test 1.4 s). A "kill" is an exception that is not an ``Exception`` raised at
the Nth storage call of a promotion; from then on every storage call fails too (the process is
dead: nothing it would do on the way out happens, its lease stays behind). After each kill,
production must serve one whole version (the previous one, or the new one when the kill came
after the pointer), and the next promotion must succeed with the whole history.
The models here are plain files (the protocol copies bytes; TensorFlow is not needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.promotion import publish

STORES = ["local", pytest.param("gcs", marks=pytest.mark.gcs),
          pytest.param("s3", marks=pytest.mark.s3), pytest.param("az", marks=pytest.mark.azure)]
WRAPPED = ("exists", "read_bytes", "read_bounded_uri", "write_bytes", "create_bytes",
           "list_files", "delete_file", "upload_file", "remove")


class Killed(BaseException):  # noqa: N818 - what happened to the process
    """The process died at this storage call (not an Exception: no handler catches it)."""


def fake_model(folder, tag: str) -> str:
    """A Model folder of plain files whose every byte says ``tag``."""
    files = {"model.json": json.dumps({"tag": tag, "image_shape": [8, 8, 1],
                                       "num_classes": 4}),
             "saved_model/1/saved_model.pb": f"pb-{tag}" * 50}
    for rel, text in files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as handle:
            handle.write(text)
    return str(folder)


def snapshot(folder: str) -> dict[str, str]:
    """Every file under ``folder`` (local, gs://, s3://, az://) -> its sha256."""
    return {rel: hashlib.sha256(storage.read_bytes(storage.join(folder, rel))).hexdigest()
            for rel in storage.list_files(folder)}


def root_for(store: str, request, tmp_path) -> str:
    """A fresh root on ``store``; on gs://, with create-if-absent enforced (see below)."""
    if store == "local":
        return str(tmp_path / "store")
    if store == "gcs":
        request.getfixturevalue("gcs_preconditions")
    return request.getfixturevalue(f"{store}_root")


@pytest.fixture
def gcs_preconditions(monkeypatch):
    """A stand-in for GCS's ``ifGenerationMatch=0`` check, which the emulator ignores.

    Real GCS answers 412 to a create of an existing object; gcp-storage-emulator overwrites
    it. Here gcsfs's upload (what ``storage.create_bytes`` sends with ``mode="create"``)
    answers the 412 real GCS would; the check and the upload run under one lock on fsspec's
    event loop, as the server makes them one step.
    """
    import asyncio

    from gcsfs import GCSFileSystem
    from gcsfs.retry import validate_response

    real = GCSFileSystem._pipe_file
    guard: list[asyncio.Lock] = []

    async def pipe_file(self, path, data, *args, mode="overwrite", **kwargs):
        if not guard:
            guard.append(asyncio.Lock())
        async with guard[0]:
            if mode == "create":
                self.invalidate_cache(path)
                if await self._exists(path):
                    validate_response(412, b'{"error": {"message": "conditionNotMet '
                                      b'(stand-in for the emulator)"}}', path)
            return await real(self, path, data, *args, mode=mode, **kwargs)

    monkeypatch.setattr(GCSFileSystem, "_pipe_file", pipe_file)


def promote(model: str, prod: str, run: str) -> dict:
    """A promotion as promote_model does it, without the scoring: check, lock, publish."""
    target = publish.check_target(prod)
    with publish.promotion_lock(target) as lease:
        return publish.publish(model, target, {"run": run}, lease)


def promote_together(start, model: str, prod: str, run: str, copy_s: float = 0.3) -> None:
    """:func:`promote`, once every process given ``start`` (a multiprocessing Barrier) is ready.

    Module-level and light to import: what a spawned process runs. Each file's copy takes
    ``copy_s`` longer (in this process only), so that the promotions overlap: without the
    lock both would read the same record and write the same version.
    """
    import time

    real = storage.upload_file

    def slow_upload(*args, **kwargs):  # noqa: ANN202 - storage.upload_file's
        time.sleep(copy_s)
        return real(*args, **kwargs)

    storage.upload_file = slow_upload
    start.wait(timeout=120)
    promote(model, prod, run)


def serving(prod: str) -> tuple[str, dict[str, str]]:
    """The version production serves now and its files' digests."""
    current = publish.current_model(prod)
    return current.rsplit("/", 1)[-1], snapshot(current)


def expire_lease(prod: str) -> None:
    """Make the lease a killed promotion left (if any) expired, as if its time had run out."""
    uri = publish.lock_uri(publish.resolve_target(prod)[0])
    if storage.is_remote(uri) and storage.exists(uri):
        body = json.loads(storage.read_bytes(uri))
        storage.write_bytes(uri, json.dumps({**body, "expires_at": 0}).encode())


@pytest.mark.parametrize("store", STORES)
def test_a_kill_at_every_storage_call_leaves_production_whole_and_serving(
        store, request, tmp_path, monkeypatch):
    root = root_for(store, request, tmp_path)
    models = [fake_model(tmp_path / "a", "a"), fake_model(tmp_path / "b", "b")]
    want = [snapshot(models[0]), snapshot(models[1])]
    real = {name: getattr(storage, name) for name in WRAPPED}
    count = [0]
    kill_at = [10**9]

    def dying(name):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] > kill_at[0]:
                raise Killed(f"killed at call {kill_at[0]} ({name})")
            return real[name](*args, **kwargs)
        return call

    for name in WRAPPED:
        monkeypatch.setattr(storage, name, dying(name))
    prod = storage.join(root, "prod")
    promote(models[0], prod, "r0")
    storage.write_bytes(storage.join(prod, "notes.txt"), b"the user's own file")
    count[0] = 0
    promote(models[1], prod, "clean")  # how many storage calls a promotion makes
    total = count[0]
    assert total >= 10

    for at in range(total):  # production serves models[k % 2]; kill a promotion of the other
        serves = (at + 1) % 2
        history = [h["run"] for h in publish.read_record(prod)["history"]]
        count[0], kill_at[0] = 0, at
        with pytest.raises(Killed):
            promote(models[1 - serves], prod, f"killed{at}")
        kill_at[0] = 10**9
        expire_lease(prod)  # time passes: a dead holder's lease runs out
        version, files = serving(prod)  # whole, one version, never a mix
        assert publish.read_record(prod)["aliases"]["champion"] == version, at
        landed = files == want[1 - serves]
        assert files == want[serves] or landed, (at, files)
        runs = [h["run"] for h in publish.read_record(prod)["history"]]
        assert runs == history + ([f"killed{at}"] if landed else []), at
        if landed:  # killed after its pointer: production moved on, whole
            promote(models[serves], prod, f"back{at}")
            runs.append(f"back{at}")
        promote(models[1 - serves], prod, f"next{at}")  # recovers and succeeds
        assert [h["run"] for h in publish.read_record(prod)["history"]] == [*runs,
                                                                            f"next{at}"]
        assert serving(prod)[1] == want[1 - serves], at

    assert storage.read_bytes(storage.join(prod, "notes.txt")) == b"the user's own file"
    left = storage.list_files(prod)
    assert not [rel for rel in left if rel.endswith(publish.PARTIAL_MARK)]
    named = {h["version"] for h in publish.read_record(prod)["history"]}
    for head in {rel.split("/", 1)[0] for rel in left} - {"notes.txt", "promotion.json"}:
        # a version the pointer never named is one a kill stopped between its mark's
        # deletion and the pointer: complete, never served, skipped by later numbers
        assert head in named or snapshot(storage.join(prod, head)) in want, head


@pytest.mark.parametrize("store", STORES[:2])  # s3's lease is the same code: 15 s spared
def test_a_kill_at_every_storage_call_of_an_alias_move_leaves_the_registry_consistent(
        store, request, tmp_path, monkeypatch):
    """A rollback killed anywhere: champion names v1 or v2, both whole; the next one works."""
    prod = storage.join(root_for(store, request, tmp_path), "prod")
    models = [fake_model(tmp_path / "a", "a"), fake_model(tmp_path / "b", "b")]
    for i, model in enumerate(models):
        promote(model, prod, f"r{i}")
    versions = {v: snapshot(storage.join(prod, v)) for v in ("v1", "v2")}
    real = {name: getattr(storage, name) for name in WRAPPED}
    count, kill_at = [0], [10**9]

    def dying(name):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] > kill_at[0]:
                raise Killed(name)
            return real[name](*args, **kwargs)
        return call

    for name in WRAPPED:
        monkeypatch.setattr(storage, name, dying(name))
    count[0] = 0
    publish.move_alias(prod, "champion", "v1")
    total = count[0]
    publish.move_alias(prod, "champion", "v2")
    for at in range(total):
        count[0], kill_at[0] = 0, at
        with pytest.raises(Killed):
            publish.move_alias(prod, "champion", "v1")
        kill_at[0] = 10**9
        expire_lease(prod)
        record = publish.read_record(prod)
        champion = record["aliases"]["champion"]
        assert champion in ("v1", "v2") and record["current"]["version"] == champion, at
        assert {v: snapshot(storage.join(prod, v)) for v in versions} == versions, at
        publish.move_alias(prod, "champion", "v2")  # works after any kill
        assert serving(prod) == ("v2", versions["v2"]), at


@pytest.mark.parametrize("store", STORES)
def test_overlapping_promotions_lose_no_history_entry(store, request, tmp_path, monkeypatch):
    monkeypatch.setattr(publish, "_POLL_S", 0.05)
    prod = storage.join(root_for(store, request, tmp_path), "prod")
    models = [fake_model(tmp_path / f"m{i}", f"m{i}") for i in range(4)]
    errors = []

    def run(i):
        try:
            promote(models[i], prod, f"r{i}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    record = publish.read_record(prod)
    assert sorted(h["run"] for h in record["history"]) == ["r0", "r1", "r2", "r3"]
    assert [h["version"] for h in record["history"]] == ["v1", "v2", "v3", "v4"]
    assert record["aliases"] == {"champion": "v4"}
    for entry in record["history"]:
        tag = entry["run"].replace("r", "m")
        assert snapshot(storage.join(prod, entry["version"])) == snapshot(
            str(tmp_path / tag))
    assert not storage.exists(publish.lock_uri(publish.resolve_target(prod)[0]))  \
        or store == "local"  # the lease is released; the local lock file stays, unlocked


@pytest.mark.parametrize("store", STORES)
def test_a_waiter_gives_up_in_one_line_naming_the_lock(store, request, tmp_path, monkeypatch):
    monkeypatch.setattr(publish, "LOCK_WAIT_S", 0.3)
    monkeypatch.setattr(publish, "_POLL_S", 0.05)
    prod = storage.join(root_for(store, request, tmp_path), "prod")
    target = publish.check_target(prod)
    with publish.promotion_lock(target):
        with pytest.raises(StorageError) as err:
            promote(fake_model(tmp_path / "m", "m"), prod, "r1")
    line = str(err.value)
    assert "\n" not in line and line.startswith(publish.lock_uri(target))
    assert "another promotion" in line
    assert publish.current_model(prod) == ""  # nothing was promoted
    promote(fake_model(tmp_path / "m", "m"), prod, "r1")  # released: it goes through


@pytest.mark.s3
def test_a_huge_lease_is_read_no_further_than_the_bound_and_taken_over(s3_root, tmp_path):
    """A lease object of 8 MiB (not tbpipe's: its leases are a few hundred bytes) is read as
    at most MAX_METADATA_BYTES + 1 bytes, unreadable, so expired: the promotion takes over."""
    import tracemalloc

    from tbpipe.components.common.limits import MAX_METADATA_BYTES

    prod = storage.join(s3_root, "prod")
    uri = publish.lock_uri(publish.check_target(prod))
    storage.write_bytes(uri, b"{" * (8 << 20))
    tracemalloc.start()
    try:
        data, expires = publish._read_lease(uri)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (len(data), expires) == (MAX_METADATA_BYTES + 1, 0.0)
    assert peak < 4 * MAX_METADATA_BYTES, peak  # not the 8 MiB object
    promote(fake_model(tmp_path / "m", "m"), prod, "r1")
    assert publish.read_record(prod)["aliases"] == {"champion": "v1"}
    assert not storage.exists(uri)  # taken over, then released


def test_user_files_in_the_target_survive_every_promotion(tmp_path):
    prod = tmp_path / "prod"
    (prod / "docs").mkdir(parents=True)
    (prod / "README.md").write_text("ours")
    (prod / "docs" / "notes.txt").write_text("also ours")
    (prod / "v2").mkdir()  # a user's folder that looks like a version: skipped, not touched
    (prod / "v2" / "x").write_text("mine")
    for i in range(3):
        promote(fake_model(tmp_path / f"m{i}", f"m{i}"), str(prod), f"r{i}")
    assert (prod / "README.md").read_text() == "ours"
    assert (prod / "docs" / "notes.txt").read_text() == "also ours"
    assert (prod / "v2" / "x").read_text() == "mine" and os.listdir(prod / "v2") == ["x"]
    record = publish.read_record(str(prod))
    assert [h["version"] for h in record["history"]] == ["v3", "v4", "v5"]  # above the v2
    assert record["current"]["files"] == sorted(storage.list_files(str(tmp_path / "m2")))


@pytest.mark.parametrize("make, words", [
    (lambda p, lr: (p.write_text("x"), str(p))[1], "is a file; promote to a folder"),
    (lambda p, lr: (p.mkdir(), (p / "promotion.json").write_text("{\"mine\": 1}"), str(p))[2],
     "not a tbpipe promotion record"),
    (lambda p, lr: (p.mkdir(), (p / "promotion.json").write_text("not json"), str(p))[2],
     r"not a promotion record \(not JSON\)"),
    (lambda p, lr: (p.mkdir(), (p / "promotion.json").mkdir(), str(p))[2],
     "not a file tbpipe wrote"),
    (lambda p, lr: "/", "the disk root"),
    (lambda p, lr: lr, "is the log root"),
    (lambda p, lr: os.path.join(lr, "exp", "prod"), "is the log root"),
    (lambda p, lr: (os.symlink(p.parent / "nowhere", p), str(p))[1],
     "a symlink to .*nowhere, which does not exist"),
    (lambda p, lr: "p.keras", "promote to a folder"),
])
def test_targets_tbpipe_cannot_own_are_refused_in_one_line(make, words, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    target = make(tmp_path / "prod", str(logs))
    before = snapshot(str(tmp_path))
    with pytest.raises(InputError, match=words) as err:
        publish.check_target(target, str(logs))
    assert "\n" not in str(err.value)
    assert snapshot(str(tmp_path)) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_folder_that_cannot_be_written_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(InputError, match="cannot write in"):
        publish.check_target(str(locked / "prod"))


def test_a_symlinked_target_is_resolved_and_says_so(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "prod"
    os.symlink(real, link)
    assert publish.resolve_target(str(link)) == (
        str(real), f"{link} leads through a symlink: promoting into {real}")
    below = link / "new" / "prod"  # not there yet, below a symlinked folder: fine
    assert publish.check_target(str(below)) == str(real / "new" / "prod")
    for i in range(2):  # a symlinked target broke every later promotion
        promote(fake_model(tmp_path / f"m{i}", f"m{i}"), str(link), f"r{i}")
    assert os.path.islink(link) and os.readlink(link) == str(real)
    assert [h["run"] for h in publish.read_record(str(real))["history"]] == ["r0", "r1"]
    assert publish.current_model(str(link)) == str(real / "v2")
    assert os.path.exists(tmp_path / ".real.lock")  # one lock for both names of the folder


def test_a_production_folder_of_the_first_layout_is_read_and_kept(tmp_path):
    prod = tmp_path / "prod"
    fake_model(prod, "legacy")
    legacy = {"format": "tbpipe.promotion.v1", "current": {"run": "r0"},
              "history": [{"run": "r0"}]}
    (prod / "promotion.json").write_text(json.dumps(legacy))
    before = {rel: h for rel, h in snapshot(str(prod)).items() if rel != "promotion.json"}
    assert publish.current_model(str(prod)) == str(prod)  # the baseline until promoted
    promote(fake_model(tmp_path / "m1", "m1"), str(prod), "r1")
    assert publish.current_model(str(prod)) == str(prod / "v1")
    assert [h["run"] for h in publish.read_record(str(prod))["history"]] == ["r0", "r1"]
    after = snapshot(str(prod))
    assert all(after[rel] == digest for rel, digest in before.items())  # still served as was


KILLED_MID_COPY = """
import os, signal, sys
from tbpipe.components.common import storage
from tbpipe.components.promotion import publish
real, uploads = storage.upload_file, []
def upload(*args, **kwargs):
    uploads.append(args)
    if len(uploads) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
storage.upload_file = upload
target = publish.check_target(sys.argv[2])
with publish.promotion_lock(target) as lease:
    publish.publish(sys.argv[1], target, {"run": "killed"}, lease)
"""


def test_a_real_sigkill_mid_copy_leaves_production_serving_and_the_lock_free(tmp_path,
                                                                             monkeypatch):
    import signal
    import subprocess
    import sys

    prod = str(tmp_path / "prod")
    old, new = fake_model(tmp_path / "old", "old"), fake_model(tmp_path / "new", "new")
    promote(old, prod, "r1")
    before = serving(prod)
    proc = subprocess.run([sys.executable, "-c", KILLED_MID_COPY, new, prod], timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert serving(prod) == before  # the pointer still names v1, whole
    assert os.path.exists(os.path.join(prod, "v2", publish.PARTIAL_MARK))  # the kill's debris
    monkeypatch.setattr(publish, "LOCK_WAIT_S", 0.0)  # the dead holder's flock is gone
    after = promote(new, prod, "r2")
    assert [h["run"] for h in after["history"]] == ["r1", "r2"]
    assert serving(prod) == ("v3", snapshot(new)) and not os.path.exists(
        os.path.join(prod, "v2"))
