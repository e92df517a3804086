"""``--mlflow-uri``: each promotion is registered in a real MLflow tracking server.

The fixture starts ``mlflow server`` (SQLite backend store, a local artifact root) on a free
loopback port; no double. A dead server fails the promotion in one line, before anything
changes.
"""

import json
import os
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
from tests.helpers import write_dataset
from tests.unit.test_promote import CLASSES, SHAPE, row_model, save

pytest.importorskip("mlflow")
pytestmark = pytest.mark.integration


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
             "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
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
        server.terminate()
        server.wait(timeout=30)


def test_a_promotion_is_registered_in_mlflow_with_its_blessing(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    write_dataset(str(tmp_path / "test"), n=32, shape=SHAPE, classes=CLASSES, seed=3)
    good = save(row_model(), tmp_path / "good")
    registry = str(tmp_path / "models" / "digits")
    gate = "metrics: {accuracy: {lower_bound: 0.9}}"
    decision = promote_model(good, str(tmp_path / "test"), registry, "",
                             str(tmp_path / "logs"), str(tmp_path / "r.md"),
                             PromoteConfig(gate=gate, mlflow_uri=mlflow_server,
                                           run_label="exp/r1"))
    assert decision.version == "v1"
    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("digits", "champion")
    assert version.tags["tbpipe.version"] == "v1" and version.tags["tbpipe.blessed"] == "true"
    assert version.tags["tbpipe.uri"] == f"{registry}/v1"
    assert version.tags["tbpipe.blessing"].startswith("gate passed (1 checks")
    run = client.get_run(version.run_id)
    assert run.data.metrics["accuracy"] == 1.0 and run.data.tags["tbpipe.run"] == "exp/r1"
    blessing = client.download_artifacts(version.run_id, "tbpipe/blessing.json",
                                         str(tmp_path))
    assert json.loads(open(blessing).read()) == decision.blessing


def test_a_dead_mlflow_server_fails_the_promotion_in_one_line_before_anything(tmp_path):
    registry = str(tmp_path / "prod")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(InputError) as err:
        promote_model(str(tmp_path / "none"), str(tmp_path / "test"), registry, "",
                      str(tmp_path / "logs"), str(tmp_path / "r.md"),
                      PromoteConfig(mlflow_uri=dead))
    line = str(err.value)
    assert line.startswith(f"--mlflow-uri {dead}: the MLflow tracking server does not answer")
    assert "\n" not in line and line.endswith("Nothing was promoted")
    assert publish.current_model(registry) == "" and not (tmp_path / "logs").exists()
