"""The images built for real, the whole pipeline in them, and TensorBoard serving its logs.

Session cost (this repo's CI): bootstrapping the base, building the cpu and TensorBoard images,
one pipeline run with 1 epoch, four TensorBoard containers (the run's local logs; its train
step on gs:// and on s3://, as deploy/tensorboard's pod runs it; on s3:// as Kubeflow's
tensorboard-controller runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tbpipe.components import _image
from tbpipe.pipelines.runners.build_context import DOCKER_DIR
from tests.helpers import free_port, get_json, read_tags

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


PLAIN_UID = 4321  # the "user" when the tests run as root: files must end up owned by them
RUN_SCRIPT = """
import json, sys
from tbpipe.pipelines.runners.docker import docker_paths
from tbpipe.pipelines.runners.local import run_pipeline
from tbpipe.pipelines.training import PipelineParams
root, experiment, run = sys.argv[1:]
params = PipelineParams(epochs=1, finetune="always", finetune_epochs=1, log_root=root + "/logs",
                        experiment=experiment, run_name=run, workers=2)
result = run_pipeline(params, pipeline_root=root + "/kfp", runner="docker", **docker_paths(params))
print("SUMMARY " + json.dumps(result.summary))
"""


def as_plain_user(root: Path) -> tuple[list[str], tuple[int, int]]:
    """A command prefix running as a non-root user who can reach docker (setpriv as root)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return [], (os.getuid(), os.getgid())
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    docker_gid = os.stat(host.removeprefix("unix://")).st_gid
    os.chown(root, PLAIN_UID, PLAIN_UID)
    return ([shutil.which("setpriv"), f"--reuid={PLAIN_UID}", f"--regid={PLAIN_UID}",
             f"--groups={docker_gid}"], (PLAIN_UID, PLAIN_UID))


@pytest.fixture(scope="module")
def docker_run(built_images) -> Iterator[tuple[Path, tuple[int, int]]]:
    """One whole pipeline run with the docker runner on the built-in data, as a plain user;
    train and finetune over two worker processes (``--workers 2``) in their containers."""
    root = Path(tempfile.mkdtemp(prefix="tbpipe-docker-run-"))
    try:
        prefix, owner = as_plain_user(root)
        start = time.monotonic()
        proc = subprocess.run([*prefix, sys.executable, "-c", RUN_SCRIPT, str(root), EXPERIMENT,
                               RUN], capture_output=True, text=True, timeout=900,
                              env={**os.environ, "HOME": str(root)})
        print(f"pipeline in docker: {time.monotonic() - start:.0f} s")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summary = json.loads(proc.stdout.split("SUMMARY ", 1)[1])
        assert set(summary["accuracy"]) == {"trained", "finetuned"}, summary
        yield root, owner
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_every_step_ran_in_docker_and_logged(docker_run):
    run_dir = docker_run[0] / "logs" / EXPERIMENT / RUN
    for step in STEPS:
        assert read_tags(str(run_dir / step))["scalars"], step
    assert "epoch/accuracy" in read_tags(str(run_dir / "train"))["scalars"]
    assert "eval/accuracy" in read_tags(str(run_dir / "evaluate"))["scalars"]
    for step in ("train", "finetune"):  # two worker processes in the step's container
        tags = read_tags(str(run_dir / step))["scalars"]
        assert {"workers/samples_per_sec/worker-0", "workers/samples_per_sec/worker-1"} <= \
            set(tags), (step, tags)


def test_step_files_are_owned_by_the_user(docker_run):
    root, owner = docker_run
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in root.rglob("*")}
    assert owners == {owner}, owners


def served_runs(container: str, port: int, wanted: set[str], timeout: float = 180,
                last_tag: str = "epoch/accuracy") -> dict:
    """Poll the TensorBoard in ``container`` until it serves ``wanted`` whole; its scalar tags.

    A run is listed as soon as its first events are loaded (TensorBoard reads a log dir in
    reload cycles): wait for ``last_tag``, logged at each epoch's end, in every wanted run
    that has epochs, rather than for some time.
    """
    runs: object = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            runs = get_json(f"http://127.0.0.1:{port}/data/runs")
            tags = get_json(f"http://127.0.0.1:{port}/data/plugin/scalars/tags")
            if wanted <= set(runs) and all(  # type: ignore[arg-type]
                    last_tag in tags.get(run, {}) for run in wanted  # type: ignore[union-attr]
                    if run.endswith(("/train", "/finetune"))):
                return tags  # type: ignore[return-value]
        except OSError:
            pass
        time.sleep(1)
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    raise AssertionError(f"TensorBoard listed {runs}, not {sorted(wanted)}: {logs.stderr[-2000:]}")


def logged(container: str, *texts: str, timeout: float = 60) -> str:
    """The container's output once it holds every one of ``texts`` (AssertionError if not).

    ``tbpipe tensorboard`` prints its loader once it has seen TensorBoard answer, which may be
    after a client of that TensorBoard was served: wait for the line rather than race it.
    """
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["docker", "logs", container], capture_output=True,
                             text=True).stdout
        if all(text in out for text in texts):
            return out
        assert time.monotonic() < deadline, f"{texts} not printed within {timeout:.0f} s: {out}"
        time.sleep(0.5)


@pytest.fixture
def tensorboard_container() -> Iterator[list[str]]:
    """Containers started by a test (ids appended to the list), removed afterwards."""
    started: list[str] = []
    yield started
    for container in started:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


def as_the_pod(writable: tuple[str, ...] = ()) -> list[str]:
    """``docker run`` options for what deploy/tensorboard's pod enforces: uid 1000, a read-only
    root file system with tmpfs where the pod has emptyDirs (``/tmp``, ``writable``), no
    capabilities, no privilege escalation."""
    options = ["--user", "1000:1000", "--read-only", "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "-e", "TMPDIR=/tmp", "--tmpfs", "/tmp"]
    for path in writable:
        options += ["--tmpfs", path]
    return options


def test_tensorboard_image_serves_the_run(docker_run, tensorboard_container):
    """The image as documented: `docker run -v LOGS:/logs:ro IMAGE` (its default --log-root)."""
    port = free_port()
    container = docker("run", "-d", *as_the_pod(), "-p", f"127.0.0.1:{port}:6006",
                       "-v", f"{docker_run[0] / 'logs'}:/logs:ro",
                       _image.image("tensorboard")).stdout.strip()
    tensorboard_container.append(container)
    tags = served_runs(container, port, {f"{EXPERIMENT}/{RUN}/{step}" for step in STEPS})
    assert "epoch/accuracy" in tags[f"{EXPERIMENT}/{RUN}/train"]
    assert "eval/accuracy" in tags[f"{EXPERIMENT}/{RUN}/evaluate"]
    logged(container, "loader: fast")  # a local folder: the native data server reads it


@pytest.mark.parametrize("store", ["gs", "s3"])
def test_tensorboard_image_serves_a_store_as_the_deployment_runs_it(
        store, docker_run, tensorboard_container, request):
    """deploy/tensorboard's command and args, on a store root: the mirror on its own tmpfs."""
    from tbpipe.components.common.storage import upload_file
    from tests.unit.test_deploy import MIRROR_DIR, build

    if store == "gs":
        server = request.getfixturevalue("gcs_emulator")
        root = request.getfixturevalue("gcs_root")
    else:
        server = request.getfixturevalue("s3_server")
        root = request.getfixturevalue("s3_root")
    logs = docker_run[0] / "logs"
    for path in (logs / EXPERIMENT / RUN / "train").rglob("*"):
        if path.is_file():
            upload_file(str(path), f"{root}/{path.relative_to(logs).as_posix()}")
    (deployment,) = [obj for obj in build() if obj["kind"] == "Deployment"]
    (pod,) = deployment["spec"]["template"]["spec"]["containers"]
    command = [arg.replace("$(TBPIPE_LOG_ROOT)", root) for arg in pod["command"]]
    port = free_port()  # host network (the store is on loopback): a free port, on loopback
    env = [option for key, value in server.env().items() for option in ("-e", f"{key}={value}")]
    container = docker("run", "-d", "--network", "host", *as_the_pod((MIRROR_DIR,)), *env,
                       "--entrypoint", command[0], _image.image("tensorboard"), *command[1:],
                       "--host=127.0.0.1", f"--port={port}", *pod["args"]).stdout.strip()
    tensorboard_container.append(container)
    tags = served_runs(container, port, {f"{EXPERIMENT}/{RUN}/train"})
    assert "epoch/accuracy" in tags[f"{EXPERIMENT}/{RUN}/train"]
    logged(container, "loader: mirror", f"mirror: {MIRROR_DIR} (kept)")


def test_tensorboard_image_serves_as_kubeflows_controller_runs_it(
        s3_server, s3_root, docker_run, tensorboard_container):
    """overlays/kubeflow with tbpipe's image as the controller's TENSORBOARD_IMAGE: the pod
    Kubeflow's tensorboard-controller makes (``/usr/local/bin/tensorboard --logdir=LOGSPATH
    --bind_all``, working directory /, the image's user), with the env that the admission
    webhook injects from the overlay's PodDefault, resolved against a Secret holding the
    emulator's credentials. The one departure: ``--port`` (host network, to reach the store on
    loopback)."""
    from tbpipe.components.common.storage import upload_file
    from tests.unit.test_deploy import OVERLAYS, kustomize

    logs = docker_run[0] / "logs"
    for path in (logs / EXPERIMENT / RUN / "train").rglob("*"):
        if path.is_file():
            upload_file(str(path), f"{s3_root}/{path.relative_to(logs).as_posix()}")
    objects = {obj["kind"]: obj for obj in kustomize(OVERLAYS / "kubeflow")}
    board, default = objects["Tensorboard"], objects["PodDefault"]
    assert default["spec"]["selector"]["matchLabels"].items() <= board["metadata"]["labels"].items()
    emulator = s3_server.env()
    secret = {"AWS_ACCESS_KEY_ID": emulator["AWS_ACCESS_KEY_ID"],
              "AWS_SECRET_ACCESS_KEY": emulator["AWS_SECRET_ACCESS_KEY"],
              "AWS_ENDPOINT_URL": emulator["AWS_ENDPOINT_URL"],
              "AWS_REGION": emulator["AWS_DEFAULT_REGION"]}
    injected = {entry["name"]: secret[entry["valueFrom"]["secretKeyRef"]["key"]]
                for entry in default["spec"]["env"]}
    env = [option for name, value in injected.items() for option in ("-e", f"{name}={value}")]
    port = free_port()
    container = docker("run", "-d", "--network", "host", "--workdir", "/", *env,
                       "--entrypoint", "/usr/local/bin/tensorboard", _image.image("tensorboard"),
                       f"--logdir={s3_root}", "--bind_all", f"--port={port}").stdout.strip()
    tensorboard_container.append(container)
    tags = served_runs(container, port, {f"{EXPERIMENT}/{RUN}/train"})
    assert "epoch/accuracy" in tags[f"{EXPERIMENT}/{RUN}/train"]
    logged(container, f"serving {s3_root}", "loader: mirror")
