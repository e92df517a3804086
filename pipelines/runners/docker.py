"""The kfp.local DockerRunner for ``tbpipe run --runner docker``: each step in its image.

kfp mounts the pipeline root itself; this adds what the steps reach besides it: local input
paths (read-only) and output roots (log root, checkpoints) at the same absolute paths, the
user's uid:gid so files end up owned by the user, the GCS emulator or credentials for
``gs://``, the ``AWS_*`` credentials and endpoint for ``s3://``, and GPUs (docker device
requests) when asked for and present.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from tbpipe.components import _image
from tbpipe.components.common.errors import TbpipeError

PASSED_ENV = ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT",
              "CLOUDSDK_CORE_PROJECT", "TF_CPP_MIN_LOG_LEVEL")
ADC_FILE = Path("~/.config/gcloud/application_default_credentials.json")
CONTAINER_ADC = "/var/run/tbpipe/application_default_credentials.json"
# boto3's standard environment: credentials, endpoint (MinIO), region. Passed to s3:// runs only.
AWS_PASSED_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                  "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def docker_paths(params) -> dict[str, tuple[str, ...]]:  # noqa: ANN001 - PipelineParams
    """Return the ``inputs``/``outputs`` options of :func:`docker_runner` for ``params``."""
    from tbpipe.components.common.naming import checkpoint_root_for

    inputs = (params.data, params.finetune_data, params.model.local_start_path,
              params.baseline_model)
    # promote swaps the production folder with siblings: its parent is mounted
    production = os.path.dirname(os.path.abspath(params.promote_to)) if is_local_path(
        params.promote_to) else ""
    return {"inputs": tuple(path for path in inputs if path),
            "outputs": tuple(p for p in (params.log_root,
                                         checkpoint_root_for(params.log_root,
                                                             params.checkpoint_root),
                                         production) if p)}


def is_local_path(path: str) -> bool:
    """Whether ``path`` names a local file or folder (not gs://, builtin:, other URIs)."""
    return bool(path) and "://" not in path and not path.startswith("builtin:")


def path_mounts(inputs: Iterable[str], outputs: Iterable[str], pipeline_root: str) -> list:
    """Bind mounts at the same absolute path: inputs read-only, outputs (created) read-write."""
    from docker.types import Mount

    mounts: dict[str, Mount] = {}
    taken = {os.path.abspath(pipeline_root)}
    for path, read_only in [*((p, False) for p in outputs), *((p, True) for p in inputs)]:
        if not is_local_path(path):
            continue
        path = os.path.abspath(os.path.expanduser(path))
        if path in taken:
            continue
        if not read_only:
            os.makedirs(path, exist_ok=True)
        elif not os.path.exists(path):
            continue  # the step reports the missing input itself
        taken.add(path)
        mounts[path] = Mount(target=path, source=path, type="bind", read_only=read_only)
    return list(mounts.values())


def gcs_settings(uses_gcs: bool) -> tuple[dict[str, str], list, str | None]:
    """Environment, mounts and network mode that let the steps reach GCS (or its emulator)."""
    from docker.types import Mount

    env = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    mounts, network = [], None
    emulator = env.get("STORAGE_EMULATOR_HOST")
    if emulator and urlsplit(emulator if "://" in emulator else f"http://{emulator}").hostname \
            in LOOPBACK:
        network = "host"  # the emulator listens on the host's loopback
    credentials = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or (
        str(ADC_FILE.expanduser()) if ADC_FILE.expanduser().is_file() else None)
    if uses_gcs and not emulator and credentials and os.path.isfile(credentials):
        mounts.append(Mount(target=CONTAINER_ADC, source=os.path.abspath(credentials),
                            type="bind", read_only=True))
        env["GOOGLE_APPLICATION_CREDENTIALS"] = CONTAINER_ADC
    return env, mounts, network


def s3_settings(uses_s3: bool) -> tuple[dict[str, str], str | None]:
    """Environment and network mode that let the steps reach S3 (or MinIO, or moto).

    The ``AWS_*`` variables are passed through from this environment for runs that read or
    write ``s3://``; an endpoint on the host's loopback needs the host's network.
    """
    if not uses_s3:
        return {}, None
    env = {name: os.environ[name] for name in AWS_PASSED_ENV if os.environ.get(name)}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    network = "host" if endpoint and urlsplit(endpoint).hostname in LOOPBACK else None
    return env, network


@functools.cache
def host_gpus() -> tuple[int, str]:
    """How many NVIDIA GPUs docker can pass through, and why not when 0."""
    if shutil.which("nvidia-smi") is None:
        return 0, "no NVIDIA driver (nvidia-smi) on this host"
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    count = sum(line.startswith("GPU ") for line in listed.stdout.splitlines())
    if count == 0:
        return 0, "nvidia-smi lists no GPU"
    if shutil.which("nvidia-container-runtime-hook") is None \
            and shutil.which("nvidia-container-runtime") is None:
        return 0, "the NVIDIA Container Toolkit is not installed"
    return count, ""


def gpus_usable(gpus: str | None) -> bool:
    """Whether ``--gpus`` was asked for and docker can pass GPUs through on this host.

    ``tbpipe run --runner docker --gpus all`` compiles train/finetune onto the gpu image
    only then; otherwise :func:`docker_runner` says why and every step runs on CPU.
    """
    return bool(gpus) and host_gpus()[0] > 0


def gpu_requests(gpus: str | None) -> list:
    """Docker device requests for ``--gpus`` (``all``, a count, or ids ``0,1``); [] for none."""
    from docker.types import DeviceRequest

    if not gpus:
        return []
    available, reason = host_gpus()
    if available == 0:
        print(f"docker runner: --gpus {gpus} asked for, but {reason}: running on CPU")
        return []
    if gpus == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if gpus.isdigit():
        return [DeviceRequest(count=int(gpus), capabilities=[["gpu"]])]
    ids = gpus.removeprefix("device=").split(",")
    return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]


def docker_client():  # noqa: ANN201 - docker.DockerClient
    """Connect to the running docker engine; one clear line when there is none."""
    try:
        import docker
    except ImportError as exc:
        raise TbpipeError("the docker runner needs the 'docker' Python package: "
                          "pip install docker") from exc
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise TbpipeError("the docker engine is not running or not reachable "
                          f"({str(exc).splitlines()[0][:120]}): start it and retry") from exc
    return client


def check_images(client, images: Iterable[str]) -> None:  # noqa: ANN001
    """Fail early, naming the command to run, when a step image is not built."""
    import docker

    for image in images:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            variant = "gpu" if image.endswith("-gpu") else "cpu"
            raise TbpipeError(f"image {image} not found: build it with `tbpipe build-images "
                              f"--variant {variant}` (or pull it from your registry)") from None


def docker_runner(pipeline_root: str, gpus: str | None = None, inputs: Iterable[str] = (),
                  outputs: Iterable[str] = (), images: Iterable[str] | None = None,
                  **container_args: object):  # noqa: ANN201 - kfp.local.DockerRunner
    """Return a configured ``kfp.local.DockerRunner``.

    Args:
        pipeline_root: the local pipeline root (kfp mounts it at the same path).
        gpus: ``all``, a count or device ids; None runs on CPU.
        inputs: local paths the steps read (mounted read-only when they exist).
        outputs: local folders the steps write (created, mounted read-write).
        images: step images that must exist locally (default: the cpu image, and the gpu
            image when GPUs are passed through).
        **container_args: more ``docker run`` options (kfp.local.DockerRunner's).

    Raises:
        TbpipeError: docker is missing or not running, or an image is not built.

    """
    from kfp import local

    inputs, outputs = list(inputs), list(outputs)
    client = docker_client()
    requests = gpu_requests(gpus)
    default_images = [_image.IMAGE, _image.GPU_IMAGE] if requests else [_image.IMAGE]
    check_images(client, images if images is not None else default_images)
    client.close()
    # Created here, as the user: a bind source docker creates itself belongs to root.
    os.makedirs(pipeline_root, exist_ok=True)
    uses_gcs = any(str(p).startswith("gs://") for p in [*inputs, *outputs])
    env, gcs_mounts, network = gcs_settings(uses_gcs)
    s3_env, s3_network = s3_settings(any(str(p).startswith("s3://")
                                         for p in [*inputs, *outputs]))
    env, network = {**env, **s3_env}, network or s3_network
    options: dict[str, object] = {
        "environment": {**env, "HOME": "/tmp"},  # the host uid may have no home in the image
        "mounts": path_mounts(inputs, outputs, pipeline_root) + gcs_mounts,
    }
    if hasattr(os, "getuid"):
        options["user"] = f"{os.getuid()}:{os.getgid()}"
    if network:
        options["network_mode"] = network
    if requests:
        options["device_requests"] = requests
    options.update(container_args)
    if not inputs and not outputs:
        print("docker runner: warning: no local data or log folders given (docker_paths); "
              "files the steps write outside the pipeline root stay in their containers")
    mounted = ", ".join(m["Target"] for m in options["mounts"]) or "none"  # type: ignore[union-attr]
    print(f"docker runner: user {options.get('user', 'image default')}, mounts {mounted}"
          f"{', GPUs ' + str(gpus) if requests else ''}", flush=True)
    return local.DockerRunner(**options)
