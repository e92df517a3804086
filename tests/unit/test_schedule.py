"""``tbpipe schedule`` against KfpStandIn (tests/kfp_standin.py), a TEST DOUBLE of KFP's API.

The stand-in deserializes each recurring run into kfp's own client model
(``kfp_server_api.V2beta1RecurringRun``) and checks it as KFP would (one trigger, a 6-field
cron, max_concurrency 1 to 10, known experiment and version, typed parameters).
"""

import json

import kfp_server_api
import pytest

from tbpipe.pipelines.cli.main import main
from tbpipe.pipelines.placement import CompileOptions
from tbpipe.pipelines.training import compile_pipeline
from tests.kfp_standin import KfpStandIn


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "pipeline.yaml"
    return compile_pipeline(str(path), CompileOptions(image_registry="registry.example/p"))


@pytest.fixture
def kfp(monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    with KfpStandIn() as server:
        yield server


def tbpipe(kfp, capsys, *argv):
    try:
        rc = main([*argv, "--endpoint", kfp.url])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def test_create_sends_a_valid_recurring_run_with_the_parameters(kfp, package, capsys,
                                                                  tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("finetune_epochs: 2\nexperiment: nightly\n")
    rc, out, err = tbpipe(kfp, capsys, "schedule", "create", "--name", "nightly-mnist",
                          "--cron", "0 3 * * *", "--max-concurrency", "2",
                          "--package", package, "--params-file", str(params),
                          "--log-root", "gs://b/logs", "--epochs", "3", "-o", "json")
    assert rc == 0, err
    assert kfp.problems == []
    (made,) = kfp.recurring_runs.values()
    model = kfp_server_api.ApiClient().deserialize(type("R", (), {"data": json.dumps(made)}),
                                                   "V2beta1RecurringRun")
    assert model.display_name == "nightly-mnist" and model.mode == "ENABLE"
    assert model.trigger.cron_schedule.cron == "0 0 3 * * *"  # KFP's seconds field first
    assert model.no_catchup is True and int(model.max_concurrency) == 2
    assert kfp.experiments[model.experiment_id]["display_name"] == "nightly"
    sent = model.runtime_config.parameters
    assert sent == {"epochs": 3, "finetune_epochs": 2, "experiment": "nightly",
                    "log_root": "gs://b/logs"}  # no run_name: KFP names each run
    result = json.loads(out)
    assert result["recurring_run_id"] == model.recurring_run_id
    assert result["trigger"] == "cron 0 0 3 * * *" and result["catch_up"] is False


def test_an_interval_with_catch_up_then_list_and_delete_by_name(kfp, package, capsys):
    rc, _, err = tbpipe(kfp, capsys, "schedule", "create", "--name", "weekly", "--every", "7d",
                        "--catch-up", "--package", package, "--log-root", "gs://b/logs")
    assert rc == 0, err
    (made,) = kfp.recurring_runs.values()
    assert list(made["trigger"]) == ["periodic_schedule"]
    assert int(made["trigger"]["periodic_schedule"]["interval_second"]) == 7 * 86400
    assert made["no_catchup"] is False
    rc, out, _ = tbpipe(kfp, capsys, "schedule", "list", "-o", "json")
    (row,) = json.loads(out)["schedules"]
    assert row["name"] == "weekly" and row["trigger"] == "every 604800s"
    assert row["catch_up"] is True and row["status"] == "ENABLED"
    rc, out, err = tbpipe(kfp, capsys, "schedule", "delete", "weekly")
    assert rc == 0, err
    assert kfp.recurring_runs == {} and "deleted schedule weekly" in out


@pytest.mark.parametrize("argv, needle", [
    (["--cron", "0 3 * *"], "--cron='0 3 * *': give 5 fields"),
    (["--every", "soon"], "--every='soon': give a positive interval"),
    ([], "needs --cron EXPR or --every INTERVAL"),
    (["--cron", "0 3 * * *", "--every", "1h"], "needs --cron EXPR or --every INTERVAL"),
    (["--every", "1h", "--max-concurrency", "11"], "--max-concurrency=11: must be 1 to 10"),
    (["--every", "1h", "--run-name", "r1"], "--run-name r1: each scheduled run is named"),
])
def test_bad_schedules_are_one_line_and_send_nothing(kfp, package, capsys, argv, needle):
    rc, _, err = tbpipe(kfp, capsys, "schedule", "create", "--name", "s", "--package", package,
                        "--log-root", "gs://b/logs", *argv)
    assert rc == 1 and len(err) == 1 and needle in err[0], err
    assert kfp.recurring_runs == {}


def test_server_errors_are_one_line(kfp, package, capsys):
    kfp.fail(500, "/recurringruns")
    rc, _, err = tbpipe(kfp, capsys, "schedule", "list")
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("tbpipe: error: KFP at http://127.0.0.1:") and "500" in err[0]
    assert "listing recurring runs" in err[0]


def test_notify_with_a_package_compiled_without_it_is_refused(kfp, package, capsys):
    rc, _, err = tbpipe(kfp, capsys, "schedule", "create", "--name", "s", "--every", "1h",
                        "--package", package, "--log-root", "gs://b/logs",
                        "--notify", "env:TBPIPE_WEBHOOK_URL")
    assert rc == 1 and len(err) == 1 and "was compiled without it" in err[0], err
    assert kfp.pipelines == {} and kfp.recurring_runs == {}
