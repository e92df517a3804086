"""Run summaries and ``tbpipe runs``: local and gs:// log roots, newest first."""

import json

import pytest

from tbpipe.components.common import storage
from tbpipe.components.common.run_claim import claim_run
from tbpipe.components.common.run_summary import list_runs, read_run_summary, write_run_summary
from tbpipe.pipelines.cli.main import main

SELECTION = {"final_model": "finetuned", "final_accuracy": 0.9123, "model_uri": "/m",
             "accuracy": {"trained": 0.85, "finetuned": 0.9123}}


def fake_run(root, experiment, run, started, promotion=None, selection=SELECTION):
    """A run folder as the steps leave it: claimed, two steps' event files, a summary."""
    claim_run(root, experiment, run, f"job-{run}")
    for step in ("train", "evaluate"):
        storage.write_bytes(storage.join(root, experiment, run, step,
                                         f"events.out.tfevents.{started + 1}.host.1.0"), b"")
    storage.write_bytes(storage.join(root, experiment, run, "train",
                                     f"events.out.tfevents.{started}.host.2.0"), b"")
    return write_run_summary(root, experiment, run, selection, "http://tb:6006", promotion)


def make_root(root):
    fake_run(root, "exp", "old", 1_700_000_000)
    fake_run(root, "exp", "new", 1_800_000_000,
             promotion={"promoted": False, "decision": "kept baseline"},
             selection={**SELECTION, "final_model": "trained",
                        "accuracy": {"trained": 0.5}, "final_accuracy": 0.5})
    fake_run(root, "other", "mid", 1_750_000_000, promotion={"promoted": True})
    claim_run(root, "exp", "running", "job-running")  # claimed, no summary yet


def check_listing(runs):
    assert [(r["experiment"], r["run"]) for r in runs] == [
        ("exp", "new"), ("other", "mid"), ("exp", "old"), ("exp", "running")]
    new, mid, old, running = runs
    assert new["started"] == 1_800_000_000 and new["steps"] == ["evaluate", "train"]
    assert new["test_accuracy"] == 0.5 and new["finetuned"] is False
    assert new["promotion"]["decision"] == "kept baseline" and mid["promotion"]["promoted"]
    assert old["finetuned"] is True and old["promotion"] is None
    assert new["tensorboard_url"] == "http://tb:6006/#scalars&regexInput=exp%2Fnew"
    assert running["status"] == "unfinished" and running["steps"] == []


def test_summary_is_written_whole_and_read_back(tmp_path):
    root = str(tmp_path / "logs")
    written = fake_run(root, "exp", "r1", 1_700_000_000)
    assert read_run_summary(root, "exp", "r1") == written
    assert read_run_summary(root, "exp", "r2") is None
    assert [p.name for p in (tmp_path / "logs" / "exp" / "r1").iterdir()
            if p.name.startswith(".")] == []  # no temporary file left


def test_runs_on_a_local_root_newest_first(tmp_path, capsys):
    root = str(tmp_path / "logs")
    make_root(root)
    check_listing(list_runs(root))

    assert main(["runs", "--log-root", root]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["experiment", "run", "started"]
    assert lines[1].split()[:7] == ["exp", "new", "2027-01-15", "08:00:00", "2", "0.5000", "no"]
    assert "no (kept baseline)" in lines[1] and "exp%2Fnew" in lines[1]
    assert lines[3].split()[5:7] == ["0.9123", "yes"] and lines[4].split()[-1] == "-"

    assert main(["runs", "--log-root", root, "--output", "json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)  # stdout is one JSON object and nothing else
    assert document["log_root"] == root
    check_listing(document["runs"])


@pytest.mark.gcs
def test_runs_on_gcs(gcs_root, capsys):
    make_root(gcs_root)
    check_listing(list_runs(gcs_root))
    assert main(["runs", "--log-root", gcs_root, "--output", "json"]) == 0
    check_listing(json.loads(capsys.readouterr().out)["runs"])


def test_a_missing_root_or_a_broken_summary_is_one_line(tmp_path, capsys):
    assert main(["runs", "--log-root", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"tbpipe: error: {tmp_path / 'nowhere'}: no such log root; pass the --log-root the "
        "runs wrote to")
    (tmp_path / "exp" / "r1").mkdir(parents=True)
    (tmp_path / "exp" / "r1" / "_summary.json").write_text("{half")
    # A broken summary no longer stops the listing (issue 23): its row says what is wrong.
    (row,) = list_runs(str(tmp_path))
    assert row["status"] == "unreadable summary (not a run summary (not JSON))"


def test_select_model_writes_the_run_summary(tmp_path):
    from kfp.dsl import Model

    from tbpipe.components import select_model

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "model.keras").write_text("trained")
    root = str(tmp_path / "logs")
    best = Model(uri=str(tmp_path / "kfp" / "job-7" / "select-model" / "best_model"))
    out = json.loads(select_model.python_func(
        trained_model=Model(uri=str(tmp_path / "t")), trained_accuracy=0.75, best_model=best,
        log_root=root, experiment="exp", job_name="job-7"))
    summary = read_run_summary(root, "exp", "job-7")
    assert summary["test_accuracy"] == 0.75 == out["final_accuracy"]
    assert summary["model_uri"] == best.uri and summary["finetuned"] is False
    assert summary["promotion"] is None
