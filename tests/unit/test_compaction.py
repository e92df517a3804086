"""Compaction of a closed writer's event segments, read back with TensorBoard's own loader.

The segments go to a local log dir here (the publisher writes through the storage layer,
local paths and object stores alike); TensorBoard's ``EventAccumulator`` reads the folder
at every point of the compaction: before it, after the compacted object appears, after each
segment is deleted, and after the end. Readers that had read all segments, only some, or
none must each hold every event exactly once after each of their reloads.
"""

from __future__ import annotations

import os
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter

from tbpipe.components.common import storage
from tbpipe.components.common.errors import StorageUnavailable
from tbpipe.components.common.tensorboard import segments
from tbpipe.components.common.tensorboard.segments import COMPACTED_SUFFIX, SegmentPublisher

STEPS, PER_SEGMENT = 60, 10
EXPECTED = [(step, float(step * step)) for step in range(STEPS)]


def reader(log_dir: str) -> EventAccumulator:
    return EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})


def points(acc: EventAccumulator) -> list[tuple[int, float]]:
    """Reload, then every ``loss`` point the reader holds, in its order."""
    acc.Reload()
    if "loss" not in acc.Tags()["scalars"]:
        return []
    return [(event.step, event.value) for event in acc.Scalars("loss")]


def flush(writer: SummaryWriter, staging: str, step: int) -> None:
    """Flush, and wait until the writer thread has written ``step`` to the local file."""
    deadline = time.monotonic() + 180  # the first read imports TensorFlow: slow on a busy host
    while True:
        writer.flush()
        held = points(reader(staging))
        if held and held[-1][0] == step:
            return
        assert time.monotonic() < deadline, held[-1:]
        time.sleep(0.05)


def event_objects(log_dir: str) -> list[str]:
    return [name for name in sorted(os.listdir(log_dir)) if "tfevents" in name]


@pytest.fixture
def published(tmp_path):
    """A closed writer whose events were published as one segment per PER_SEGMENT steps, and
    readers that had read the first k segments before compaction (k = 1 .. all)."""
    staging, log_dir = tmp_path / "staging", tmp_path / "logs" / "exp" / "run" / "train"
    log_dir.mkdir(parents=True)
    writer = SummaryWriter(str(staging), flush_secs=600)
    publisher = SegmentPublisher(str(staging), str(log_dir))
    readers = []
    for step, value in EXPECTED:
        writer.add_scalar("loss", value, step)
        if step % PER_SEGMENT == PER_SEGMENT - 1:
            flush(writer, str(staging), step)
            publisher.publish(10)
            readers.append(reader(str(log_dir)))
            assert points(readers[-1]) == EXPECTED[:step + 1]
    writer.close()
    publisher.publish(10)
    assert publisher.segments == STEPS // PER_SEGMENT + (publisher.segments > STEPS // PER_SEGMENT)
    return publisher, str(log_dir), readers


def test_every_reader_holds_every_event_once_at_every_point(published, monkeypatch):
    publisher, log_dir, lagging = published
    caught_up = reader(log_dir)
    assert points(caught_up) == EXPECTED
    names_before = event_objects(log_dir)
    seen_states = []
    real_delete = storage.delete_file

    def delete_and_look(uri, deadline=None):
        """The real delete, with every kind of reader reloading just before it."""
        seen_states.append(event_objects(log_dir))
        assert any(n.endswith(COMPACTED_SUFFIX) for n in seen_states[-1])  # complete first
        assert points(caught_up) == EXPECTED
        assert points(reader(log_dir)) == EXPECTED  # a TensorBoard started just now
        if lagging:
            assert points(lagging.pop(0)) == EXPECTED  # had read only some segments
        real_delete(uri, deadline)

    monkeypatch.setattr(segments, "delete_file", delete_and_look)
    deleted = publisher.compact(30)

    assert deleted == len(names_before) == len(seen_states) > 2
    (compacted,) = event_objects(log_dir)  # a finished step: one event object
    assert compacted == names_before[0].rsplit(".", 1)[0] + COMPACTED_SUFFIX
    assert compacted > names_before[-1]  # sorts after every segment it replaced
    assert points(caught_up) == EXPECTED and points(reader(log_dir)) == EXPECTED
    for acc in lagging:
        assert points(acc) == EXPECTED


def test_a_failure_midway_loses_nothing_and_a_retry_finishes(published, monkeypatch):
    publisher, log_dir, _ = published
    caught_up = reader(log_dir)
    assert points(caught_up) == EXPECTED
    real_delete, calls = storage.delete_file, []

    def failing_delete(uri, deadline=None):
        calls.append(uri)
        if len(calls) == 3:
            raise StorageUnavailable(f"{uri}: storage unreachable (connection failed)")
        real_delete(uri, deadline)

    monkeypatch.setattr(segments, "delete_file", failing_delete)
    with pytest.raises(StorageUnavailable):
        publisher.compact(30)
    left = event_objects(log_dir)
    assert len(left) > 2 and left[-1].endswith(COMPACTED_SUFFIX)  # segments and the object
    assert points(caught_up) == EXPECTED and points(reader(log_dir)) == EXPECTED

    monkeypatch.setattr(segments, "delete_file", real_delete)
    publisher.compact(30)  # the retry: the same object again, the rest deleted
    assert len(event_objects(log_dir)) == 1
    assert points(caught_up) == EXPECTED and points(reader(log_dir)) == EXPECTED


def test_a_failed_upload_leaves_the_segments_alone(published, monkeypatch):
    publisher, log_dir, _ = published
    before = event_objects(log_dir)

    def no_upload(local_path, uri, deadline=None):
        raise StorageUnavailable(f"{uri}: storage unreachable (connection failed)")

    monkeypatch.setattr(segments, "upload_file", no_upload)
    with pytest.raises(StorageUnavailable):
        publisher.compact(30)
    assert event_objects(log_dir) == before
    assert points(reader(log_dir)) == EXPECTED


def test_a_resumed_attempt_after_a_compacted_one_still_purges_its_tail(tmp_path):
    """Attempt 1 logs steps 0-9 and is compacted; attempt 2 resumes at 5 (purge_step)."""
    log_dir = tmp_path / "logs"
    for attempt, (first, purge_step) in enumerate(((0, None), (5, 5))):
        staging = tmp_path / f"staging{attempt}"
        writer = SummaryWriter(str(staging), flush_secs=600, purge_step=purge_step,
                               filename_suffix=f".attempt{attempt}")
        publisher = SegmentPublisher(str(staging), str(log_dir))
        for step in range(first, first + 10 if attempt == 0 else 12):
            writer.add_scalar("loss", step + (100.0 if attempt == 0 else 0.0), step)
            if step % 3 == 2:
                flush(writer, str(staging), step)
                publisher.publish(10)
        writer.close()
        publisher.publish(10)
        assert publisher.compact(30) > 1
    assert len(event_objects(str(log_dir))) == 2
    loss = points(reader(str(log_dir)))
    assert [s for s, _ in loss] == list(range(12))
    assert [v for s, v in loss if s >= 5] == [float(s) for s in range(5, 12)]


def test_no_segment_is_deleted_before_the_grace_is_over(published):
    publisher, log_dir, _ = published
    before = event_objects(log_dir)
    with pytest.raises(StorageUnavailable, match="no time left to wait"):
        publisher.compact(2, grace=5)  # the deadline ends inside the grace
    after = event_objects(log_dir)
    assert after[:-1] == before and after[-1].endswith(COMPACTED_SUFFIX)
    assert points(reader(log_dir)) == EXPECTED
