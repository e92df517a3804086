"""Fixtures for the docker tests: a docker engine, the offline base image, the built images.

The images are built once per session from the bootstrapped base (docker/bootstrap-base.sh,
no registry needed), with this machine's CA bundle as extra certificates so pip reaches its
index through a TLS-inspecting proxy. ``TBPIPE_TEST_BASE_IMAGE`` picks another base image
(e.g. ``python:3.11.13-slim-bookworm`` where a registry is reachable).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tbpipe.pipelines.runners.images import BuiltImage

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("TBPIPE_TEST_BASE_IMAGE", "tbpipe-base:bookworm")
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def engine_problem() -> str | None:
    """Why docker tests cannot run here, or None when they can."""
    if shutil.which("docker") is None:
        return "docker CLI not installed (.ci/docker-setup.sh installs it)"
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the 'docker' Python package is not installed (pip install docker)"
    probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return "no running docker engine (.ci/docker-setup.sh starts one)"
    return None


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """Skip (with the reason) when no docker engine is reachable."""
    problem = engine_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def base_image(docker_engine: None) -> str:
    """The base image of the builds, bootstrapped from Debian packages when missing."""
    present = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True,
                             check=False).returncode == 0
    if present:
        return BASE_IMAGE
    if BASE_IMAGE != "tbpipe-base:bookworm":
        pytest.skip(f"TBPIPE_TEST_BASE_IMAGE={BASE_IMAGE} is not present locally")
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip("bootstrapping the base image needs root and debootstrap")
    start = time.monotonic()
    subprocess.run([str(ROOT / "docker" / "bootstrap-base.sh")], check=True,
                   env={**os.environ, "TAG": BASE_IMAGE})
    print(f"bootstrapped {BASE_IMAGE} in {time.monotonic() - start:.0f} s")
    return BASE_IMAGE


@pytest.fixture(scope="session")
def built_images(base_image: str) -> dict[str, BuiltImage]:
    """The cpu and TensorBoard images, built with the tags the component specs use."""
    from tbpipe.pipelines.runners.images import build_images

    certs = [str(SYSTEM_CA_BUNDLE)] if SYSTEM_CA_BUNDLE.is_file() else []
    built = build_images(["cpu", "tensorboard"], base_image=base_image, extra_ca_certs=certs)
    return {image.variant: image for image in built}
