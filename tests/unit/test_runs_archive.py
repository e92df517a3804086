"""``tbpipe runs archive``: old runs out of the served log root, kept and served elsewhere."""

import json
import os

import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.common.run_summary import list_runs
from tbpipe.pipelines import run_archive
from tbpipe.pipelines.cli.main import main
from tbpipe.pipelines.run_archive import ArchiveSelection, archive_runs, select_runs
from tests.unit.test_runs import fake_run, make_root

DAY = 86_400


def names(runs):
    return [f"{r['experiment']}/{r['run']}" for r in runs]


def tree(root):
    """Every file under ``root`` with its bytes (relative path -> bytes)."""
    return {rel: storage.read_bytes(storage.join(root, rel)) for rel in storage.list_files(root)}


def test_selection_by_age_by_rank_and_by_name():
    now = 1_800_000_000
    runs = [  # newest first, as list_runs gives them
        {"experiment": "a", "run": "r4", "started": now - 1 * DAY},
        {"experiment": "b", "run": "r3", "started": now - 20 * DAY},
        {"experiment": "a", "run": "r2", "started": now - 40 * DAY},
        {"experiment": "a", "run": "r1", "started": now - 90 * DAY},
        {"experiment": "a", "run": "live", "started": now - 99 * DAY, "status": "unfinished"}]
    pick = lambda **kw: names(select_runs(runs, ArchiveSelection(**kw), now))  # noqa: E731
    assert pick(older_than_days=30) == ["a/r2", "a/r1"]  # never the unfinished one
    assert pick(keep_latest=1) == ["a/r2", "a/r1"]  # per experiment: b's only run stays
    assert pick(keep_latest=2, older_than_days=10) == ["a/r1"]  # both must hold
    assert pick(runs=("a/live", "b/r3")) == ["b/r3", "a/live"]  # by name, even unfinished
    assert pick(older_than_days=100) == []


@pytest.mark.parametrize("kwargs, message", [
    ({}, "say which runs"), ({"older_than_days": -1}, "--older-than -1"),
    ({"keep_latest": -2}, "--keep-latest -2"), ({"runs": ("nobody",)}, "EXPERIMENT/RUN"),
    ({"runs": ("a/../b",)}, "not allowed")])
def test_a_bad_selection_is_one_line(kwargs, message):
    with pytest.raises(InputError, match=message):
        ArchiveSelection(**kwargs)


def test_archive_moves_old_runs_beside_the_root_and_back(tmp_path, capsys):
    root, archive = str(tmp_path / "logs"), str(tmp_path / "logs-archive")
    make_root(root)  # exp/new, other/mid, exp/old, exp/running (unfinished)
    before = tree(root)
    assert main(["runs", "archive", "--log-root", root, "--keep-latest", "1"]) == 0
    out = capsys.readouterr().out
    assert f"moved exp/old (5 files) -> {archive}" in out and "1 run(s) moved" in out
    assert names(list_runs(root)) == ["exp/new", "other/mid", "exp/running"]
    assert names(list_runs(archive)) == ["exp/old"]
    assert tree(archive) == {k: v for k, v in before.items() if k.startswith("exp/old/")}
    assert not os.path.exists(os.path.join(root, "exp", "old"))
    # Back again: the same command with the roots swapped.
    assert main(["runs", "archive", "--log-root", archive, "--to", root, "--run", "exp/old",
                 "--output", "json"]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert reply["archived"] == [{"experiment": "exp", "run": "old", "files": 5}]
    assert tree(root) == before


def test_dry_run_moves_nothing(tmp_path, capsys):
    root = str(tmp_path / "logs")
    make_root(root)
    before = tree(root)
    assert main(["runs", "--log-root", root, "archive", "--older-than", "0", "--dry-run"]) == 0
    assert "would move exp/old" in capsys.readouterr().out
    assert tree(root) == before and not os.path.exists(root + "-archive")


def test_a_bad_archive_command_is_one_line(tmp_path, capsys):
    root = str(tmp_path / "logs")
    make_root(root)
    assert main(["runs", "archive", "--log-root", root, "--to", root + "/old",
                 "--older-than", "0"]) == 1
    assert "use a root outside" in capsys.readouterr().err
    assert main(["runs", "archive", "--log-root", root]) == 1
    assert "say which runs" in capsys.readouterr().err
    assert main(["runs", "archive", "--log-root", root, "--run", "exp/nope"]) == 1
    assert f"--run exp/nope: no such run under {root}" in capsys.readouterr().err


def test_a_move_cut_short_is_finished_by_the_next_one(tmp_path, monkeypatch):
    root, archive = str(tmp_path / "logs"), str(tmp_path / "logs-archive")
    fake_run(root, "exp", "old", 1_700_000_000)
    os.makedirs(os.path.join(archive, "exp", "old"))  # no folder rename: file by file
    before = tree(root)
    real, calls = run_archive._move_file, []

    def fail_on_third(source, target):
        calls.append(source)
        if len(calls) == 3:
            raise StorageError(f"{target}: cannot write (simulated)")
        real(source, target)

    monkeypatch.setattr(run_archive, "_move_file", fail_on_third)
    with pytest.raises(StorageError):
        archive_runs(root, ArchiveSelection(runs=("exp/old",)))
    # Half moved: still listed where it was, not yet in the archive (its markers move last).
    assert names(list_runs(root)) == ["exp/old"] and list_runs(archive) == []
    monkeypatch.setattr(run_archive, "_move_file", real)
    (moved,) = archive_runs(root, ArchiveSelection(runs=("exp/old",)))
    assert moved.files == 3  # what was left
    assert list_runs(root) == [] and names(list_runs(archive)) == ["exp/old"]
    assert tree(archive) == before


@pytest.mark.s3
def test_archive_on_s3(s3_root):
    archive = s3_root + "-archive"
    fake_run(s3_root, "exp", "old", 1_700_000_000)
    before = tree(s3_root)
    (moved,) = archive_runs(s3_root, ArchiveSelection(runs=("exp/old",)))
    assert (moved.experiment, moved.run, moved.files) == ("exp", "old", 5)
    assert storage.list_files(s3_root) == [] and names(list_runs(archive)) == ["exp/old"]
    assert tree(archive) == before
