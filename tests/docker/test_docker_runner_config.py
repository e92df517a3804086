"""docker_runner's settings without running a container: mounts, GCS, GPUs, errors."""

import dataclasses
import os

import pytest

pytest.importorskip("docker", reason="the 'docker' Python package is not installed")

from tbpipe.components.common.errors import TbpipeError  # noqa: E402
from tbpipe.pipelines.runners import docker as dr  # noqa: E402
from tbpipe.pipelines.training import PipelineParams


@pytest.fixture(autouse=True)
def fresh_gpu_probe():
    dr.host_gpus.cache_clear()
    yield
    dr.host_gpus.cache_clear()


def test_mounts_inputs_read_only_outputs_created_same_paths(tmp_path):
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    logs, root = tmp_path / "logs", tmp_path / "root"
    mounts = dr.path_mounts(inputs=[str(data), str(tmp_path / "missing"), "builtin:digits",
                                    "gs://bucket/data", ""],
                            outputs=[str(logs), str(root), "gs://bucket/logs"],
                            pipeline_root=str(root))
    by_target = {m["Target"]: m for m in mounts}
    assert set(by_target) == {str(data), str(logs)}  # pipeline root: mounted by kfp itself
    assert by_target[str(data)]["ReadOnly"] is True and by_target[str(data)]["Source"] == str(data)
    assert by_target[str(logs)]["ReadOnly"] is False
    assert logs.is_dir(), "output roots are created (owned by the user, not by dockerd)"


def test_docker_paths_name_what_a_run_reads_and_writes():
    params = PipelineParams(data="/d", finetune_data="/f", log_root="/l", checkpoint_root="/c")
    assert dr.docker_paths(params) == {"inputs": ("/d", "/f"), "outputs": ("/l", "/c")}
    promoting = PipelineParams(log_root="/l", promote_to="/p/prod", baseline_model="/b.keras")
    assert dr.docker_paths(promoting) == {  # promote swaps the folder with siblings in /p
        "inputs": ("builtin:digits", "/b.keras"), "outputs": ("/l", "/l-checkpoints", "/p")}
    default = dataclasses.replace(params, checkpoint_root="")  # checkpoints beside the logs
    assert dr.docker_paths(default)["outputs"] == ("/l", "/l-checkpoints")


def test_emulator_on_loopback_uses_host_network(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9023")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "proj")
    env, mounts, network = dr.gcs_settings(uses_gcs=True)
    assert env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:9023"
    assert env["GOOGLE_CLOUD_PROJECT"] == "proj"
    assert network == "host" and mounts == []


def test_credentials_file_mounted_read_only_only_for_gcs_runs(monkeypatch, tmp_path):
    key = tmp_path / "sa.json"
    key.write_text("{}")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    env, mounts, network = dr.gcs_settings(uses_gcs=True)
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == dr.CONTAINER_ADC and network is None
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in mounts] == [
        (str(key), dr.CONTAINER_ADC, True)]
    env, mounts, _ = dr.gcs_settings(uses_gcs=False)
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in env and mounts == []


def test_gpus_without_nvidia_say_so_and_run_on_cpu(monkeypatch, capsys):
    monkeypatch.setattr(dr.shutil, "which", lambda name: None)
    assert not dr.gpus_usable("all")
    assert dr.gpu_requests("all") == []
    out = capsys.readouterr().out
    assert "no NVIDIA driver" in out and "running on CPU" in out
    assert dr.gpu_requests(None) == [] and not dr.gpus_usable(None)


def test_gpu_device_requests_when_the_host_has_gpus(monkeypatch):
    monkeypatch.setattr(dr, "host_gpus", lambda: (2, ""))
    assert dr.gpus_usable("all")
    [every] = dr.gpu_requests("all")
    assert every["Count"] == -1 and every["Capabilities"] == [["gpu"]]
    assert dr.gpu_requests("1")[0]["Count"] == 1
    assert dr.gpu_requests("device=0,1")[0]["DeviceIDs"] == ["0", "1"]


def test_no_engine_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    with pytest.raises(TbpipeError, match="docker engine is not running") as caught:
        dr.docker_runner(str(tmp_path))
    assert "\n" not in str(caught.value)


def test_s3_credentials_and_endpoint_pass_through_only_for_s3_runs(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    env, network = dr.s3_settings(uses_s3=True)
    assert env == {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret",
                   "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1"}
    assert network == "host"  # MinIO on the host's loopback
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio.minio.svc:9000")
    assert dr.s3_settings(uses_s3=True)[1] is None
    assert dr.s3_settings(uses_s3=False) == ({}, None)  # no secrets for runs without s3://


def test_runner_passes_aws_settings_for_s3_roots(monkeypatch, tmp_path):

    class Client:
        images = type("Images", (), {"get": staticmethod(lambda name: name)})()

        def close(self):
            pass

    monkeypatch.setattr(dr, "docker_client", Client)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:9000")
    runner = dr.docker_runner(str(tmp_path / "root"), inputs=["s3://bucket/data.csv"],
                              outputs=["s3://bucket/tb"])
    args = runner.container_run_args
    assert args["environment"]["AWS_SECRET_ACCESS_KEY"] == "secret"
    assert args["environment"]["AWS_ENDPOINT_URL"] == "http://localhost:9000"
    assert args["network_mode"] == "host" and args["mounts"] == []


def test_runner_options(monkeypatch, tmp_path):

    class Client:
        images = type("Images", (), {"get": staticmethod(lambda name: name)})()

        def close(self):
            pass

    monkeypatch.setattr(dr, "docker_client", Client)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    runner = dr.docker_runner(str(tmp_path / "root"), inputs=[], outputs=[str(tmp_path / "l")])
    args = runner.container_run_args
    assert args["user"] == f"{os.getuid()}:{os.getgid()}"
    assert args["environment"]["HOME"] == "/tmp"
    assert [m["Target"] for m in args["mounts"]] == [str(tmp_path / "l")]
    assert "device_requests" not in args and "network_mode" not in args


def test_missing_image_names_the_build_command(monkeypatch, tmp_path):
    import docker

    class Client:
        class images:  # noqa: N801 - the docker client's attribute
            @staticmethod
            def get(name):
                raise docker.errors.ImageNotFound(name)

        def close(self):
            pass

    monkeypatch.setattr(dr, "docker_client", Client)
    monkeypatch.setattr(dr, "host_gpus", lambda: (1, ""))
    with pytest.raises(TbpipeError, match=r"tbpipe:.*-gpu not found: build it with `tbpipe "
                                          r"build-images --variant gpu`"):
        dr.docker_runner(str(tmp_path), gpus="all", images=[dr._image.GPU_IMAGE])
    with pytest.raises(TbpipeError, match="--variant cpu"):
        dr.docker_runner(str(tmp_path))
