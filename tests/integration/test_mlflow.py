"""``--mlflow-uri``: each promotion is registered in a real MLflow tracking server.

The fixture starts ``mlflow server`` (SQLite backend store, a local artifact root) on a free
loopback port; no double. A dead server fails the promotion in one line, before anything
changes.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.promotion import publish
from tbpipe.components.promotion.config import PromoteConfig
from tbpipe.components.promotion.core import promote_model
from tbpipe.components.promotion.mlflow_registry import register_version

pytest.importorskip("mlflow")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``http://127.0.0.1:PORT`` of a fresh MLflow tracking server, stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(  # noqa: S603 - our own venv's mlflow
            [mlflow, "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
             "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own group: its workers end with it
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start: "
                                + (root / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)


def test_each_promotion_is_a_model_version_with_its_blessing_and_champion_moves(
        mlflow_server, tmp_path):
    """What promote_model registers after each promotion (without TensorFlow: cheap)."""
    from mlflow import MlflowClient

    registry = str(tmp_path / "models" / "digits")
    for number, accuracy in ((1, 0.91), (2, 0.95)):
        entry = {"version": f"v{number}", "run": f"exp/r{number}", "parent":
                 f"v{number - 1}" if number > 1 else "", "data_digest": "sha256:ab",
                 "metrics": {"accuracy": accuracy, "params": 260.0}, "forced": False}
        blessing = {"passed": True, "summary": "gate passed (1 checks)", "checks": []}
        line = register_version(mlflow_server, registry, entry, blessing)
        assert line == (f"registered in MLflow as digits version {number} (alias champion) "
                        f"at {mlflow_server}")
    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("digits", "champion")
    assert version.version == "2" and version.tags["tbpipe.version"] == "v2"
    assert version.tags["tbpipe.uri"] == f"{registry}/v2" and version.tags["tbpipe.parent"] == "v1"
    assert version.tags["tbpipe.blessed"] == "true"
    assert version.tags["tbpipe.blessing"] == "gate passed (1 checks)"
    run = client.get_run(version.run_id)
    assert run.data.metrics == {"accuracy": 0.95, "params": 260.0}
    assert run.data.tags["tbpipe.run"] == "exp/r2"
    saved = client.download_artifacts(version.run_id, "tbpipe/blessing.json", str(tmp_path))
    assert json.loads(open(saved).read()) == blessing


def test_tbpipe_run_with_mlflow_uri_shows_the_version_in_mlflow(mlflow_server, tmp_path):
    """The issue's "done when": one short ``tbpipe run --promote-to --mlflow-uri``."""
    from mlflow import MlflowClient

    from tests.helpers import TBPIPE
    from tests.unit.test_promote import data_digest

    registry = str(tmp_path / "models" / "e2e")
    run = subprocess.run(  # noqa: S603 - our own CLI
        [*TBPIPE, "run", "--epochs", "1", "--finetune", "never", "--experiment", "mlf",
         "--run-name", "one", "--log-root", str(tmp_path / "logs"), "--pipeline-root",
         str(tmp_path / "kfp"), "--promote-to", registry, "--mlflow-uri", mlflow_server],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    printed = re.search(r"^promoted: new accuracy (\d\.\d{4}) vs baseline none ", run.stdout,
                        re.M)
    assert printed, run.stdout[-2000:]
    entry = json.loads(open(f"{registry}/v1/version.json").read())
    assert entry["mlflow_uri"] == mlflow_server

    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("e2e", "champion")
    assert version.version == "1" and version.tags["tbpipe.uri"] == f"{registry}/v1"
    assert version.tags["tbpipe.run"] == "mlf/one" and version.tags["tbpipe.blessed"] == "true"
    assert version.tags["tbpipe.data_digest"] == entry["data_digest"] == data_digest(
        entry["test_data"])  # the test Dataset the run scored
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics == pytest.approx(entry["metrics"]) and set(metrics) >= {
        "accuracy", "macro_f1", "loss", "params", "latency_ms"}
    assert round(metrics["accuracy"], 4) == float(printed.group(1))  # what the run printed


def test_a_dead_mlflow_server_fails_the_promotion_in_one_line_before_anything(tmp_path):
    registry = str(tmp_path / "prod")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InputError) as err:
        promote_model(str(tmp_path / "none"), str(tmp_path / "test"), registry, "",
                      str(tmp_path / "logs"), str(tmp_path / "r.md"),
                      PromoteConfig(mlflow_uri=dead))
    line = str(err.value)
    warning = register_version(dead, registry, {"version": "v1"}, None)
    assert warning.startswith(f"warning: v1 was promoted but not registered in MLflow at {dead}")
    assert line.startswith(f"--mlflow-uri {dead}: the MLflow tracking server does not answer")
    assert "\n" not in line and line.endswith("Nothing was promoted")
    assert publish.current_model(registry) == "" and not (tmp_path / "logs").exists()


def test_rollback_and_alias_move_mlflows_alias_too_or_say_why_not(mlflow_server, tmp_path,
                                                                   capsys):
    """The server each version recorded (``mlflow_uri``) follows tbpipe models' moves."""
    from mlflow import MlflowClient

    from tbpipe.pipelines.cli.main import main
    from tests.reliability.test_production import fake_model

    registry = str(tmp_path / "models" / "rolled")
    for number in (1, 2, 3):
        target = publish.check_target(registry)
        with publish.promotion_lock(target) as lease:
            record = publish.publish(fake_model(tmp_path / f"m{number}", f"m{number}"), target,
                                     {"run": f"exp/r{number}", "mlflow_uri": mlflow_server},
                                     lease)
        if number < 3:  # v3: promoted, but its registration failed
            register_version(mlflow_server, target, record["current"], None)
    client = MlflowClient(mlflow_server)

    def champion():
        return client.get_model_version_by_alias("rolled", "champion").version

    def tbpipe(*argv):
        code = main(["models", *argv])
        return code, capsys.readouterr().out.splitlines()

    assert champion() == "2"
    capsys.readouterr()  # MLflow's own lines about the runs
    code, out = tbpipe("rollback", registry, "--to", "v1")
    assert code == 0 and out[0] == f"champion: v3 -> v1 in {registry}"
    assert out[-1] == f"MLflow: champion -> rolled version 1 at {mlflow_server}"
    assert champion() == "1" and publish.read_record(registry)["aliases"]["champion"] == "v1"

    code, out = tbpipe("alias", registry, "staging", "v2")
    assert code == 0 and out[-1] == f"MLflow: staging -> rolled version 2 at {mlflow_server}"
    assert client.get_model_version_by_alias("rolled", "staging").version == "2"

    code, out = tbpipe("alias", registry, "champion", "v3")  # not in MLflow: one line, why
    assert code == 0 and out[-1] == (
        f"warning: champion moved to v3 in tbpipe's registry, but not in MLflow at "
        f"{mlflow_server}: no version of rolled there is tagged tbpipe.uri={registry}/v3 (v3 "
        "was not registered in it)")
    assert publish.read_record(registry)["aliases"]["champion"] == "v3" and champion() == "1"

    dead = f"http://127.0.0.1:{free_port()}"  # --mlflow-uri names another server
    code, out = tbpipe("rollback", registry, "--to", "v2", "--mlflow-uri", dead)
    assert code == 0 and out[-1].startswith(
        f"warning: champion moved to v2 in tbpipe's registry, but not in MLflow at {dead} (")
    assert publish.read_record(registry)["aliases"]["champion"] == "v2" and champion() == "1"
    code, out = tbpipe("rollback", registry, "--to", "v2", "--mlflow-uri", mlflow_server)
    assert code == 0 and champion() == "2"
