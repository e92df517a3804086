"""Runs do not clash: a run's folder is claimed once, before any step writes into it."""

import json
import threading

import pytest
from kfp.dsl import Dataset, Metrics

from tbpipe.components import preprocess
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.run_claim import RUN_MARKER, claim_run, run_owner
from tests.reliability.support import cli, one_error_line


def test_exactly_one_of_racing_claims_wins(tmp_path):
    barrier, results = threading.Barrier(8), {}

    def claim(owner: str) -> None:
        barrier.wait()
        try:
            claim_run(str(tmp_path), "exp", "r1", owner)
            results[owner] = "won"
        except InputError as exc:
            results[owner] = str(exc)

    threads = [threading.Thread(target=claim, args=(f"job-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [owner for owner, result in results.items() if result == "won"]
    assert len(results) == 8 and len(winners) == 1
    marker = json.loads((tmp_path / "exp" / "r1" / RUN_MARKER).read_text())
    assert marker == {"owner": winners[0]}
    for owner, result in results.items():
        if owner != winners[0]:
            assert result == (f"run exp/r1 already exists in {tmp_path} (claimed by "
                              f"{winners[0]}): pick another --run-name, or pass --resume to "
                              "continue it")


def test_the_same_owner_passes_and_resume_takes_the_claim_over(tmp_path, capsys):
    claim_run(str(tmp_path), "exp", "r1", "job-a")
    claim_run(str(tmp_path), "exp", "r1", "job-a")  # another step, or a retry, of job-a
    with pytest.raises(InputError, match=r"claimed by job-a\): pick another --run-name"):
        claim_run(str(tmp_path), "exp", "r1", "job-b")
    claim_run(str(tmp_path), "exp", "r1", "job-b", resume=True)
    assert "resuming run exp/r1 (claimed by job-a before)" in capsys.readouterr().out
    claim_run(str(tmp_path), "exp", "r1", "job-b")
    with pytest.raises(InputError, match=r"claimed by job-b\)"):
        claim_run(str(tmp_path), "exp", "r1", "job-a")
    with pytest.raises(InputError, match=r"run name '\.\.' is not allowed"):
        claim_run(str(tmp_path), "exp", "..", "job-a")


def test_the_owner_is_the_job_or_its_pipeline_root_folder():
    assert run_owner("job-7", "/root/job-9/train/model") == "job-7"
    assert run_owner("{{$.pipeline_job_name}}", "/root/job-9/train/model") == "job-9"


def test_a_step_of_another_job_is_refused_before_it_writes(tmp_path, capsys):
    claim_run(str(tmp_path / "logs"), "exp", "r1", "job-a")
    outs = {f"{s}_data": Dataset(uri=str(tmp_path / "out" / s)) for s in ("train", "val", "test")}
    with pytest.raises(SystemExit) as exit_info:
        preprocess.python_func(data="builtin:digits", **outs,
                               stats=Metrics(uri=str(tmp_path / "stats")),
                               log_root=str(tmp_path / "logs"), experiment="exp",
                               run_name="r1", job_name="job-b")
    assert exit_info.value.code == 1
    one_error_line(capsys.readouterr().err, r"^tbpipe: preprocess: error: run exp/r1 already "
                   r"exists in .*claimed by job-a\): pick another --run-name, or pass --resume")
    assert sorted(p.name for p in (tmp_path / "logs" / "exp" / "r1").iterdir()) == [RUN_MARKER]
    assert not (tmp_path / "out").exists()


def test_tbpipe_run_refuses_an_existing_run_before_anything_starts(tmp_path):
    claim_run(str(tmp_path / "logs"), "exp", "r1", "tbpipe-run-earlier")
    proc = cli("run", "--experiment", "exp", "--run-name", "r1", "--log-root",
               str(tmp_path / "logs"), "--pipeline-root", str(tmp_path / "kfp"), timeout=120)
    one_error_line(proc, r"^tbpipe: error: run exp/r1 already exists in .*claimed by "
                   r"tbpipe-run-earlier\): pick another --run-name, or pass --resume", code=1)
    assert not (tmp_path / "kfp").exists()
    assert sorted(p.name for p in (tmp_path / "logs" / "exp" / "r1").iterdir()) == [RUN_MARKER]
