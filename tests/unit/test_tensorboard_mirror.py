"""The mirror loader's sync (``tbpipe tensorboard --loader mirror``), against moto's S3 server.

The rule under test: one local event file per remote event file, grown by appends only, that
ends every sync holding each event exactly once, whatever mix of segments and compacted object
the store shows.
"""

from __future__ import annotations

import os

import pytest
from tensorboardX.proto import event_pb2

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.tensorboard.segments import (
    COMPACTED_SUFFIX,
    iter_records,
    marker_length,
    published_part,
)
from tbpipe.pipelines.runners.tensorboard_mirror import PIECE_BYTES, STATE_FILE, Mirror
from tests.helpers import event_file_parts

pytestmark = pytest.mark.s3
NAME = "events.out.tfevents.1700000000.host.1"
STEPS = 60


@pytest.fixture
def event_file(tmp_path) -> tuple[bytes, list[bytes], bytes]:
    """A step's event file: its bytes, cut into 4 segments, and its compacted object."""
    data, segments, compacted = event_file_parts(str(tmp_path / "writer"), STEPS)
    assert len(segments) >= 3 and b"".join(segments) == data
    return data, segments, compacted


def summary_steps(path: str) -> list[int]:
    """The step of every summary event in the file, in file order (duplicates kept)."""
    return [event.step for event in map(event_pb2.Event.FromString, iter_records(path))
            if event.HasField("summary")]


def put_segment(run: str, seq: int, data: bytes) -> None:
    storage.write_bytes(storage.join(run, f"{NAME}.{seq:06d}"), data)


def drop_segments(run: str, count: int) -> None:
    for seq in reversed(range(count)):  # as the sink deletes them: last first
        storage.delete_file(storage.join(run, f"{NAME}.{seq:06d}"))


@pytest.fixture(params=[PIECE_BYTES, 97], ids=["batched", "pieces"])
def mirror(s3_server, s3_root, tmp_path, request):
    """A mirror reading objects in batches, or (pieces of 97 bytes) every object a piece at a
    time, as it reads objects larger than PIECE_BYTES: the same rule must hold for both."""
    mirror = Mirror(s3_root, str(tmp_path / "mirror"), interval=0.2, piece=request.param)
    yield mirror
    mirror.stop()


def local_file(mirror: Mirror) -> str:
    return os.path.join(mirror.local_dir, "exp", "r1", "train", NAME)


def test_names_of_published_objects():
    assert published_part(f"a/b/{NAME}.000012") == (f"a/b/{NAME}", 12)
    assert published_part(f"a/b/{NAME}{COMPACTED_SUFFIX}") == (f"a/b/{NAME}", None)
    assert published_part(f"a/b/{NAME}") == (f"a/b/{NAME}", -1)  # published whole


def test_marker_length_finds_the_writers_bytes(event_file):
    data, _, compacted = event_file
    assert compacted[marker_length(compacted):] == data
    assert marker_length(data) == 0  # a plain event file has no marker


def test_segments_are_appended_in_order_across_syncs(mirror, s3_root, event_file):
    data, segments, _ = event_file
    run = storage.join(s3_root, "exp", "r1", "train")
    put_segment(run, 0, segments[0])
    put_segment(run, 2, segments[2])  # published out of order: waits for segment 1
    mirror.sync()
    assert open(local_file(mirror), "rb").read() == segments[0]
    for seq in range(1, len(segments)):
        put_segment(run, seq, segments[seq])
    stats = mirror.sync()
    assert open(local_file(mirror), "rb").read() == data  # one file, the writer's bytes
    assert stats.fetched == len(segments) - 1  # segment 0 was not read again
    assert mirror.sync().fetched == 0  # nothing changed: nothing read
    assert summary_steps(local_file(mirror)) == list(range(STEPS))


def test_a_compacted_object_alone_is_written_once(mirror, s3_root, event_file):
    _, _, compacted = event_file
    storage.write_bytes(storage.join(s3_root, "exp", "r1", "train", NAME + COMPACTED_SUFFIX),
                        compacted)
    assert mirror.sync().fetched == 1
    assert open(local_file(mirror), "rb").read() == compacted
    assert summary_steps(local_file(mirror)) == list(range(STEPS))
    assert os.listdir(os.path.dirname(local_file(mirror))) == [NAME]


@pytest.mark.parametrize("deleted", [False, True], ids=["segments-kept", "segments-deleted"])
def test_segments_then_compacted_hold_each_event_once(mirror, s3_root, event_file, deleted):
    data, segments, compacted = event_file
    run = storage.join(s3_root, "exp", "r1", "train")
    for seq, segment in enumerate(segments):
        put_segment(run, seq, segment)
    mirror.sync()
    storage.write_bytes(storage.join(run, NAME + COMPACTED_SUFFIX), compacted)
    if deleted:
        drop_segments(run, len(segments))
    mirror.sync()
    assert open(local_file(mirror), "rb").read() == data  # nothing appended, nothing rewritten
    assert summary_steps(local_file(mirror)) == list(range(STEPS))


@pytest.mark.parametrize("left", [0, 1, 2], ids=["none-left", "first-left", "two-left"])
def test_segments_deleted_before_they_were_mirrored(mirror, s3_root, event_file, left):
    """The mirror holds segment 0; the rest went (all or some) once the compacted object came."""
    data, segments, compacted = event_file
    run = storage.join(s3_root, "exp", "r1", "train")
    put_segment(run, 0, segments[0])
    mirror.sync()
    for seq in range(1, len(segments)):
        put_segment(run, seq, segments[seq])
    storage.write_bytes(storage.join(run, NAME + COMPACTED_SUFFIX), compacted)
    drop_segments(run, len(segments))
    for seq in range(left):  # deletion is last first: what is left is a prefix
        put_segment(run, seq, segments[seq])
    mirror.sync()
    assert open(local_file(mirror), "rb").read() == data  # segment 0, then the rest once
    assert summary_steps(local_file(mirror)) == list(range(STEPS))
    mirror.sync()
    assert open(local_file(mirror), "rb").read() == data


def test_other_files_are_copied_when_changed_and_gone_runs_removed(mirror, s3_root, event_file):
    _, _, compacted = event_file
    config = storage.join(s3_root, "exp", "r1", "train", "projector_config.pbtxt")
    storage.write_bytes(config, b"embeddings {}")
    storage.write_bytes(storage.join(s3_root, "exp", "r2", "train", NAME + COMPACTED_SUFFIX),
                        compacted)
    mirror.sync()
    local = os.path.join(mirror.local_dir, "exp", "r1", "train", "projector_config.pbtxt")
    assert open(local, "rb").read() == b"embeddings {}"
    storage.write_bytes(config, b"embeddings { tensor_name: 'x' }")
    storage.remove(storage.join(s3_root, "exp", "r2"))  # e.g. `tbpipe runs archive` moved it
    stats = mirror.sync()
    assert open(local, "rb").read() == b"embeddings { tensor_name: 'x' }"
    assert stats.removed == 1 and sorted(os.listdir(os.path.join(mirror.local_dir, "exp"))) \
        == ["r1"]


def test_a_kept_mirror_fetches_only_what_changed(s3_server, s3_root, event_file, tmp_path):
    data, segments, _ = event_file
    run = storage.join(s3_root, "exp", "r1", "train")
    for seq in range(2):
        put_segment(run, seq, segments[seq])
    storage.write_bytes(storage.join(s3_root, "exp", "r1", "train", "plugin.json"), b"{}")
    folder = str(tmp_path / "kept")
    Mirror(s3_root, folder).sync()
    for seq in range(2, len(segments)):
        put_segment(run, seq, segments[seq])
    again = Mirror(s3_root, folder)  # a later `tbpipe tensorboard --mirror-dir` start
    stats = again.sync()
    assert stats.fetched == len(segments) - 2  # the new segments only
    assert open(os.path.join(folder, "exp", "r1", "train", NAME), "rb").read() == data
    with pytest.raises(InputError, match="mirrors s3://.*not s3://other/logs"):
        Mirror("s3://other/logs", folder)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds files but no mirror"):
        Mirror(s3_root, str(tmp_path / "busy"))
    assert os.path.exists(os.path.join(folder, STATE_FILE))


def test_the_sync_thread_stops_and_a_temporary_mirror_is_removed(s3_server, s3_root,
                                                                 event_file):
    _, segments, _ = event_file
    put_segment(storage.join(s3_root, "exp", "r1", "train"), 0, segments[0])
    mirror = Mirror(s3_root, interval=0.1)  # a temporary folder
    mirror.start()
    try:
        while mirror.syncs < 2:  # the thread syncs on its own
            mirror._stopping.wait(0.05)
        assert os.path.exists(local_file(mirror))
    finally:
        mirror.stop()
    assert not mirror._thread.is_alive()
    assert not os.path.exists(mirror.local_dir)


def test_a_missing_bucket_is_one_storage_line(s3_server, tmp_path):
    from tbpipe.components.common.errors import StorageError

    with pytest.raises(StorageError, match="s3://no-such-bucket-tbpipe/logs: not found"):
        Mirror("s3://no-such-bucket-tbpipe/logs", str(tmp_path / "m")).sync()


def test_large_objects_are_read_a_piece_at_a_time_in_bounded_memory(s3_server, s3_root,
                                                                    tmp_path):
    """A profile or an event file has no size bound: a sync holds a piece, not the object."""
    import tracemalloc

    big = os.urandom(24 << 20)
    storage.write_bytes(storage.join(s3_root, "exp", "r", "train", "plugins", "profile",
                                     "host.xplane.pb"), big)
    storage.write_bytes(storage.join(s3_root, "exp", "r", "train", NAME), big)  # whole, grown
    mirror = Mirror(s3_root, str(tmp_path / "mirror"), piece=1 << 20)
    tracemalloc.start()
    try:
        mirror.sync()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        mirror.stop()
    train = tmp_path / "mirror" / "exp" / "r" / "train"
    assert (train / "plugins" / "profile" / "host.xplane.pb").read_bytes() == big
    assert (train / NAME).read_bytes() == big
    assert peak < 8 << 20, f"a sync of two 24 MiB objects held {peak} bytes at once"
