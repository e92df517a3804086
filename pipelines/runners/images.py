"""Building (and pushing) the component and TensorBoard images.

The tags are exactly the ones the component specs use (tbpipe.components._image), so
``tbpipe run --runner docker`` and the cluster run what was built here. Builds go through the
docker CLI from a staged context (pipelines/build_context.py), so nothing in the checkout
changes and nothing else (virtual environments, runs) is sent.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tbpipe.components import _image
from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.pipelines.runners.build_context import (
    pip_index_args,
    read_certificates,
    stage_context,
)

VARIANTS = ("cpu", "gpu", "tensorboard")
# Legacy-builder chatter that says nothing about progress.
NOISE = re.compile(r"^ ---> Running in |^Removing intermediate container |legacy builder is "
                   r"deprecated|^\s+Install the buildx component|^\s+https://docs.docker.com/go/buildx")


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """One image to build: its Dockerfile, target stage and tag."""

    variant: str
    dockerfile: str
    target: str | None
    tag: str


@dataclasses.dataclass(frozen=True)
class BuiltImage:
    """A built image: its tag, size in bytes and build time in seconds."""

    variant: str
    tag: str
    size: int
    seconds: float


def image_specs(variants: list[str], registry: str | None = None) -> list[ImageSpec]:
    """List the images to build for ``variants``, tagged as tbpipe.components._image names them."""
    specs = []
    for variant in dict.fromkeys(variants):
        if variant not in VARIANTS:
            raise InputError(f"--variant {variant!r}: use one of {', '.join(VARIANTS)}")
        tensorboard = variant == "tensorboard"
        dockerfile = "docker/tensorboard.Dockerfile" if tensorboard else "docker/Dockerfile"
        specs.append(ImageSpec(variant, dockerfile, None if tensorboard else variant,
                               _image.image(variant, registry)))
    return specs


def docker_command() -> str:
    """Find the docker CLI and check the engine runs; one clear line when it does not."""
    docker = shutil.which("docker")
    if docker is None:
        raise TbpipeError("docker is not installed: install Docker Engine "
                          "(https://docs.docker.com/engine/install/, or .ci/docker-setup.sh)")
    probe = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0 or not probe.stdout.strip():
        reason = (probe.stderr.strip().splitlines() or ["no answer"])[-1]
        raise TbpipeError(f"the docker engine is not running or not reachable ({reason}): "
                          "start it (e.g. sudo systemctl start docker) and retry")
    return docker



def build_image(docker: str, spec: ImageSpec, context: Path, build_args: dict[str, str]) -> None:
    """``docker build`` one image, streaming its output prefixed with the variant."""
    cmd = [docker, "build", "-f", str(context / spec.dockerfile), "-t", spec.tag]
    if spec.target:
        cmd += ["--target", spec.target]
    for key, value in build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    cmd.append(str(context))
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:  # type: ignore[union-attr]
            if not NOISE.search(line):
                print(f"[{spec.variant}] {line}", end="", flush=True)
    if proc.returncode != 0:
        raise TbpipeError(f"docker build of {spec.tag} failed (exit {proc.returncode}; "
                          "its output is above)")


def image_size(docker: str, tag: str) -> int:
    """Return the size of a local image in bytes."""
    out = subprocess.run([docker, "image", "inspect", "-f", "{{.Size}}", tag],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def push_image(docker: str, tag: str) -> None:
    """``docker push`` one image."""
    if subprocess.run([docker, "push", tag], check=False).returncode != 0:
        raise TbpipeError(f"docker push {tag} failed (see above): log in to the registry "
                          "(docker login) and check --registry")


def build_images(variants: list[str], registry: str | None = None, base_image: str | None = None,
                 extra_ca_certs: list[str] | None = None, push: bool = False) -> list[BuiltImage]:
    """Build (and push) the images for ``variants``; returns what was built."""
    specs = image_specs(variants, registry)
    if push and not registry:
        raise InputError("--push needs --registry (the default localhost/ tags are local only)")
    certificates = read_certificates(extra_ca_certs or [])
    docker = docker_command()
    build_args = pip_index_args()
    if base_image:
        build_args["BASE_IMAGE"] = base_image
    built = []
    with tempfile.TemporaryDirectory(prefix="tbpipe-build-") as tmp:
        context = stage_context(Path(tmp), certificates)
        for number, spec in enumerate(specs, 1):
            print(f"build-images: [{number}/{len(specs)}] building {spec.tag}", flush=True)
            start = time.monotonic()
            build_image(docker, spec, context, build_args)
            image = BuiltImage(spec.variant, spec.tag, image_size(docker, spec.tag),
                               time.monotonic() - start)
            print(f"build-images: built {image.tag}: {human_size(image.size)} "
                  f"in {image.seconds:.0f} s", flush=True)
            if push:
                push_image(docker, spec.tag)
                print(f"build-images: pushed {spec.tag}", flush=True)
            built.append(image)
    return built


def human_size(size: float) -> str:
    """``1234567890`` -> ``1.23 GB`` (decimal units, as docker prints them)."""
    units = ("B", "kB", "MB", "GB")
    power = 0
    while size >= 1000 and power < len(units) - 1:
        size, power = size / 1000, power + 1
    return f"{size:.0f} B" if power == 0 else f"{size:.2f} {units[power]}"
