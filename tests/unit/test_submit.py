"""``tbpipe submit`` against KfpStandIn, a small stand-in KFP API server (tests/kfp_standin.py).

No Kubeflow Pipelines runs here: the stand-in answers the few v2beta1 endpoints kfp.Client
uses, checks the uploaded spec parses and the run's parameters, and can answer errors.
"""

import socket
from urllib.parse import quote

import pytest
import yaml

from tbpipe.pipelines.cli.main import main
from tbpipe.pipelines.placement import CompileOptions
from tbpipe.pipelines.training import compile_pipeline
from tests.kfp_standin import KfpStandIn

LOG_ROOT = "gs://bucket/logs"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "pipeline.yaml"
    return compile_pipeline(str(path), CompileOptions(image_registry="registry.example/p"))


@pytest.fixture
def kfp(monkeypatch, tmp_path):
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    with KfpStandIn() as server:
        yield server


def submit(kfp, capsys, *argv, package=None, log_root=True):
    args = ["submit", "--endpoint", kfp.url, "--poll-interval", "0.01", *argv]
    args += ["--package", package] if package else []
    args += ["--log-root", LOG_ROOT] if log_root else []
    try:
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err.strip().splitlines()


def only_run(kfp):
    (run,) = kfp.runs.values()
    return run


def test_first_submit_uploads_pipeline_and_starts_run(kfp, package, capsys):
    rc, out, err = submit(kfp, capsys, "--experiment", "exp1", "--run-name", "r1",
                          "--epochs", "3", "--learning-rate", "0.01",
                          "--tensorboard-url", "http://tb.example", package=package)
    assert (rc, err, kfp.problems) == (0, [], [])
    run = only_run(kfp)
    assert run["display_name"] == "r1"
    assert kfp.experiments[run["experiment_id"]]["display_name"] == "exp1"
    assert run["runtime_config"]["parameters"] == {
        "epochs": 3, "learning_rate": 0.01, "tensorboard_url": "http://tb.example",
        "log_root": LOG_ROOT, "experiment": "exp1", "run_name": "r1"}
    (pipeline,) = kfp.pipelines.values()
    assert pipeline["display_name"] == "tbpipe-training"
    assert run["pipeline_version_reference"]["pipeline_id"] == pipeline["pipeline_id"]
    assert f"{kfp.url}/#/runs/details/{run['run_id']}" in out
    assert f"http://tb.example/#scalars&regexInput={quote('exp1/r1', safe='')}" in out


def test_second_submit_is_a_new_version_in_the_same_experiment(kfp, package, capsys):
    assert submit(kfp, capsys, "--run-name", "a", package=package)[0] == 0
    rc, out, _ = submit(kfp, capsys, "--run-name", "b", package=package)
    assert rc == 0 and "uploaded new version" in out
    (pipeline_id,) = kfp.pipelines
    versions = kfp.versions[pipeline_id]
    assert len(versions) == 2 and len(kfp.experiments) == 1
    run_b = next(r for r in kfp.runs.values() if r["display_name"] == "b")
    assert run_b["pipeline_version_reference"]["pipeline_version_id"] == \
        versions[-1]["pipeline_version_id"]
    assert ("POST", "/apis/v2beta1/pipelines/upload_version") in kfp.requests


def test_submit_compiles_with_the_placement_flags(kfp, capsys):
    rc, _, err = submit(kfp, capsys, "--no-gpu", "--registry", "reg.example/x")
    assert (rc, err, kfp.problems) == (0, [], [])
    (spec,) = kfp.specs.values()
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert len(images) == 1 and images.pop().startswith("reg.example/x/tbpipe:")
    resources = [e["container"].get("resources", {})
                 for e in spec["deploymentSpec"]["executors"].values()]
    assert not any("accelerator" in r for r in resources)


@pytest.mark.parametrize("argv, code, needle", [
    (["--epochs"], 2, "argument --epochs: expected one argument"),
    (["--epochs", "three"], 2, "argument --epochs: invalid int value: 'three'"),
    (["--epochs", "0"], 1, "--epochs=0: must be a positive integer"),
    (["--run-name", "a/b"], 1, "run name 'a/b' is not allowed"),
])
def test_bad_params_are_one_line_and_upload_nothing(kfp, package, capsys, argv, code, needle):
    rc, _, err = submit(kfp, capsys, *argv, package=package)
    assert rc == code and len(err) == 1 and needle in err[0], err
    assert kfp.requests == []


def test_placement_flags_with_a_package_are_refused(kfp, package, capsys):
    rc, _, err = submit(kfp, capsys, "--no-gpu", package=package)
    assert rc == 1 and len(err) == 1 and "placement flags apply when submit compiles" in err[0]
    assert kfp.requests == []


def test_log_root_must_be_given(kfp, package, capsys):
    rc, _, err = submit(kfp, capsys, package=package, log_root=False)
    assert rc == 1 and len(err) == 1 and "--log-root gs://" in err[0]


def test_a_log_volume_gives_the_log_root(kfp, capsys):
    rc, _, err = submit(kfp, capsys, "--log-volume", "tb-logs", "--run-name", "r1",
                        log_root=False)
    assert (rc, err, kfp.problems) == (0, [], [])
    assert "log_root" not in only_run(kfp)["runtime_config"]["parameters"]  # the spec's default


def test_not_a_package_is_one_line(kfp, tmp_path, capsys):
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text(yaml.safe_dump({"hello": "world"}))
    rc, _, err = submit(kfp, capsys, package=str(bogus))
    assert rc == 1 and len(err) == 1 and "not a KFP v2 pipeline YAML" in err[0]


def test_standin_rejects_a_spec_that_does_not_parse(kfp, package, tmp_path, capsys):
    with open(package) as handle:
        spec, platform = yaml.load_all(handle.read(), Loader=yaml.CSafeLoader)
    spec["root"]["dag"]["tasks"]["train"]["notAField"] = 1
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump_all([spec, platform]))
    rc, _, err = submit(kfp, capsys, package=str(broken))
    assert rc == 1 and len(err) == 1 and "400" in err[0] and "does not parse" in err[0], err
    assert kfp.problems and kfp.runs == {}


def test_wait_follows_to_success(kfp, package, capsys):
    kfp.run_states = ["PENDING", ("RUNNING", {"preprocess": "SUCCEEDED", "train": "RUNNING"}, ""),
                      ("SUCCEEDED", {"preprocess": "SUCCEEDED", "train": "SUCCEEDED"}, "")]
    rc, out, err = submit(kfp, capsys, "--wait", "--run-name", "w1", package=package)
    assert (rc, err) == (0, [])
    progress = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split()[2] for line in progress] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert "train RUNNING" in progress[1] and "run w1 SUCCEEDED" in out


def test_wait_exits_non_zero_when_the_run_fails(kfp, package, capsys):
    kfp.run_states = ["RUNNING", ("FAILED", {"train": "FAILED"}, "train: out of memory")]
    rc, out, err = submit(kfp, capsys, "--wait", "--run-name", "w2", package=package)
    assert rc == 3 and len(err) == 1  # EXIT_RUN_FAILED: not 1 (an error), not 4 (timeout)
    assert "run w2 ended FAILED: train: out of memory" in err[0] and "/#/runs/details/" in err[0]


def test_wait_timeout_has_its_own_exit_status(kfp, package, capsys):
    kfp.run_states = ["RUNNING"]
    rc, _, err = submit(kfp, capsys, "--wait", "--timeout", "0.05", "--run-name", "w3",
                        package=package)
    assert rc == 4 and len(err) == 1 and "still RUNNING after 0.05s (--timeout)" in err[0], err


@pytest.mark.parametrize("status, prefix, needle", [
    (401, "", "refused the request while connecting (401 Unauthorized"),
    (404, "/experiments", "404 Not Found: stand-in told to answer 404 while getting or creating "
                          "experiment 'default'"),
    (500, "/pipelines/upload", "failed while uploading pipeline 'tbpipe-training' (500"),
    (503, "/runs", "failed while creating run"),
])
def test_server_errors_are_one_line(kfp, package, capsys, status, prefix, needle):
    kfp.fail(status, prefix)
    rc, _, err = submit(kfp, capsys, package=package)
    assert rc == 1 and len(err) == 1 and needle in err[0], err
    assert "Traceback" not in err[0]


def test_connection_refused_is_one_line(package, capsys, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before submit connects
    rc = main(["submit", "--endpoint", f"http://127.0.0.1:{port}", "--package", package,
               "--log-root", LOG_ROOT])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "connection refused" in err[0], err


def test_tokens_are_sent_as_bearer(kfp, package, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KFP_TOKEN", "from-env")
    assert submit(kfp, capsys, package=package)[0] == 0
    assert set(kfp.authorizations) == {"Bearer from-env"}
    monkeypatch.delenv("KFP_TOKEN")
    kfp.authorizations.clear()
    token = tmp_path / "token"
    token.write_text("from-file\n")
    assert submit(kfp, capsys, "--token-file", str(token), package=package)[0] == 0
    assert set(kfp.authorizations) == {"Bearer from-file"}
    rc, _, err = submit(kfp, capsys, "--token-file", str(tmp_path / "none"), package=package)
    assert rc == 1 and err == [f"tbpipe: error: --token-file {tmp_path / 'none'}: no such file"]


@pytest.fixture
def silent_server():
    """A server that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_server_that_never_answers_fails_in_one_line_within_the_bound(
        silent_server, package, capsys, monkeypatch):
    import time

    monkeypatch.delenv("KFP_HOST", raising=False)
    start = time.monotonic()
    rc = main(["submit", "--endpoint", silent_server, "--package", package, "--request-timeout",
               "0.5", "--log-root", LOG_ROOT])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1, err
    assert err[0] == (f"tbpipe: error: KFP at {silent_server} did not answer within 0.5s while "
                      "connecting: check --endpoint points at the KFP API, or raise "
                      "--request-timeout")
    assert elapsed < 10


@pytest.mark.parametrize("value", ["0", "-1", "inf", "nan"])
def test_a_request_timeout_must_be_positive_and_finite(value, package, capsys):
    rc = main(["submit", "--endpoint", "http://127.0.0.1:9", "--package", package,
               "--request-timeout", value, "--log-root", LOG_ROOT])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and line.startswith(f"tbpipe: error: --request-timeout={float(value)!r}: ")


def test_a_sweep_is_compiled_and_submitted_as_a_loop(kfp, capsys):
    rc, _, err = submit(kfp, capsys, "--run-name", "s1", "--sweep", "learning_rate=0.01,0.001",
                        "--max-parallel", "1")
    assert (rc, err, kfp.problems) == (0, [], [])
    (spec,) = kfp.specs.values()
    tasks = {t["taskInfo"]["name"]: t for t in spec["root"]["dag"]["tasks"].values()}
    assert tasks["sweep"]["iteratorPolicy"] == {"parallelismLimit": 1}
    assert "select-trial" in tasks and "train" not in tasks


def test_a_sweep_with_a_package_is_refused(kfp, package, capsys):
    rc, _, err = submit(kfp, capsys, "--sweep", "seed=1,2", package=package)
    assert rc == 1 and len(err) == 1 and "--sweep applies when submit compiles" in err[0], err
    assert kfp.requests == []


def test_output_json_is_the_only_thing_on_stdout(kfp, package, capsys):
    import json

    kfp.run_states = ["RUNNING", ("SUCCEEDED", {"train": "SUCCEEDED"}, "")]
    rc, out, err = submit(kfp, capsys, "--wait", "--output", "json", "--experiment", "e1",
                          "--run-name", "j1", "--tensorboard-url", "http://tb.example",
                          package=package)
    assert rc == 0, err
    result = json.loads(out)  # the whole of stdout is one object
    (run,) = kfp.runs.values()
    assert result["run_id"] == run["run_id"] and result["state"] == "SUCCEEDED"
    assert result["run_url"].endswith(f"/#/runs/details/{run['run_id']}")
    assert result["log_dir"] == f"{LOG_ROOT}/e1/j1"
    board = f"http://tb.example/#scalars&regexInput={quote('e1/j1', safe='')}"
    assert result["tensorboard_url"] == board
    assert any("SUCCEEDED" in line for line in err)  # the progress went to stderr


def test_params_file_gives_parameters_and_flags_win(kfp, package, capsys, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("epochs: 7\nlearning-rate: 0.5\nfinetune: always\nrun_name: from-file\n")
    rc, _, err = submit(kfp, capsys, "--params-file", str(params), "--epochs", "2",
                        package=package)
    assert (rc, err) == (0, [])
    parameters = only_run(kfp)["runtime_config"]["parameters"]
    assert (parameters["epochs"], parameters["learning_rate"], parameters["finetune"],
            parameters["run_name"]) == (2, 0.5, "always", "from-file")


@pytest.mark.parametrize("text, needle", [
    ("epochs: [1, 2]\n", "epochs: expected an integer, got [1, 2]"),
    ("epoch: 3\n", "unknown parameter 'epoch'"),
    ("- epochs\n", "expected a mapping of parameter names to values, got list"),
    ("epochs: 3\n  bad: [\n", "not YAML or JSON"),
    ('{"epochs": 0}', "--epochs=0: must be a positive integer"),
])
def test_a_bad_params_file_is_one_line(kfp, package, capsys, tmp_path, text, needle):
    params = tmp_path / "params.json"
    params.write_text(text)
    rc, _, err = submit(kfp, capsys, "--params-file", str(params), package=package)
    assert rc == 1 and len(err) == 1 and needle in err[0], err
    assert kfp.requests == []
