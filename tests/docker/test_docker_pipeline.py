"""The images built for real, the whole pipeline in them, and TensorBoard serving its logs.

Session cost (this repo's CI): bootstrapping the base, building the cpu and TensorBoard images,
one pipeline run with 1 epoch, one TensorBoard container.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from components import _image
from pipelines.images import DOCKER_DIR
from tests.helpers import read_tags

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STEPS = ("preprocess", "train", "evaluate", "finetune", "evaluate-finetuned")
EXPERIMENT, RUN = "dockertest", "docker-run"


def docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          **kwargs)


def inspect(tag: str) -> dict:
    return json.loads(docker("image", "inspect", tag).stdout)[0]


def test_images_are_tagged_non_root_and_sized(built_images):
    assert built_images["cpu"].tag == _image.IMAGE
    assert built_images["tensorboard"].tag == _image.image("tensorboard")
    for image in built_images.values():
        config = inspect(image.tag)["Config"]
        assert config["User"] not in ("", "root", "0"), image.tag
        assert image.size == inspect(image.tag)["Size"] > 50_000_000
        assert not any(k in e for e in config["Env"] for k in ("TOKEN", "SECRET", "PASSWORD"))
    assert built_images["tensorboard"].size < built_images["cpu"].size / 2


def test_cpu_image_installs_the_project_at_the_pinned_versions(built_images):
    script = ("import json, importlib.metadata as m; "
              "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version "
              "for d in m.distributions()}))")
    installed = json.loads(docker("run", "--rm", "--workdir", "/", _image.IMAGE, "python3", "-c",
                                  script).stdout)
    assert installed.pop("tbpipe") == _image.package_version()
    pins = dict(line.split("==") for line in (DOCKER_DIR / "constraints.txt").read_text()
                .splitlines() if line and not line.startswith("#"))
    for name in ("tensorflow", "kfp", "tensorboardx", "keras", "numpy", "google-cloud-storage"):
        assert installed[name] == pins[name], name
    caches = docker("run", "--rm", _image.IMAGE, "sh", "-c",
                    "ls -d /root/.cache/pip $HOME/.cache/pip 2>/dev/null | wc -l").stdout
    assert caches.strip() == "0", "a pip cache was left in the image"


@pytest.fixture(scope="module")
def docker_run(built_images, tmp_path_factory) -> Path:
    """One whole pipeline run with --runner docker on the built-in data; its log root."""
    from pipelines.docker_runner import docker_paths
    from pipelines.local import run_pipeline
    from pipelines.options import PipelineParams

    root = tmp_path_factory.mktemp("docker-run")
    params = PipelineParams(epochs=1, finetune="always", finetune_epochs=1,
                            log_root=str(root / "logs"), experiment=EXPERIMENT, run_name=RUN)
    start = time.monotonic()
    result = run_pipeline(params, pipeline_root=str(root / "kfp"), runner="docker",
                          **docker_paths(params))
    print(f"pipeline in docker: {time.monotonic() - start:.0f} s")
    assert set(result.summary["accuracy"]) == {"trained", "finetuned"}, result.summary
    return root


def test_every_step_ran_in_docker_and_logged(docker_run):
    run_dir = docker_run / "logs" / EXPERIMENT / RUN
    for step in STEPS:
        assert read_tags(str(run_dir / step))["scalars"], step
    assert "epoch/accuracy" in read_tags(str(run_dir / "train"))["scalars"]
    assert "eval/accuracy" in read_tags(str(run_dir / "evaluate"))["scalars"]


def test_step_files_are_owned_by_the_user(docker_run):
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in docker_run.rglob("*")}
    assert owners == {(os.getuid(), os.getgid())}, owners


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def test_tensorboard_image_serves_the_run(docker_run):
    port = free_port()
    container = docker("run", "-d", "--rm", "-p", f"127.0.0.1:{port}:6006",
                       "-v", f"{docker_run / 'logs'}:/logs:ro", _image.image("tensorboard"),
                       "--logdir", "/logs").stdout.strip()
    try:
        wanted = {f"{EXPERIMENT}/{RUN}/{step}" for step in STEPS}
        runs: object = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                runs = get_json(f"http://127.0.0.1:{port}/data/runs")
                if wanted <= set(runs):  # type: ignore[arg-type]
                    break
            except OSError:
                pass
            time.sleep(1)
        assert wanted <= set(runs or []), (runs, docker("logs", container).stderr[-2000:])
        tags = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags")
        assert "epoch/accuracy" in tags[f"{EXPERIMENT}/{RUN}/train"]  # type: ignore[index]
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
