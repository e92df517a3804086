"""``tbpipe build-images``: build (and push) the component and TensorBoard images.

The tags are exactly the ones the component specs use (components._image), so
``tbpipe run --runner docker`` and the cluster run what was built here. Builds go through the
docker CLI from a staged context (the project, docker/constraints.txt, extra CA certificates),
so nothing in the checkout changes and nothing else (virtual environments, runs) is sent.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from components import _image
from components.common.errors import InputError, TbpipeError

VARIANTS = ("cpu", "gpu", "tensorboard")
ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "docker"
CONTEXT_FILES = ("pyproject.toml", "README.md", "components", "pipelines",
                 "docker/constraints.txt", "docker/requirements.py", "docker/Dockerfile",
                 "docker/tensorboard.Dockerfile")
# Legacy-builder chatter that says nothing about progress.
NOISE = re.compile(r"^ ---> Running in |^Removing intermediate container |legacy builder is "
                   r"deprecated|^\s+Install the buildx component|^\s+https://docs.docker.com/go/buildx")
PIP_INDEX_KEYS = {"index-url": "PIP_INDEX_URL", "extra-index-url": "PIP_EXTRA_INDEX_URL",
                  "trusted-host": "PIP_TRUSTED_HOST"}


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
    """List the images to build for ``variants``, tagged as components._image names them."""
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


def pip_index_args() -> dict[str, str]:
    """Return this machine's pip index settings as build args (URLs containers can reach).

    ``file://`` indexes and URLs carrying credentials are left out with a line saying so:
    build args are visible in ``docker history``.
    """
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, check=False).stdout
    rank = {":env:": 0, "install": 1, "global": 2}  # pip's precedence for `pip install`
    found: dict[str, tuple[int, list[str]]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        section, _, name = key.rpartition(".")
        if name in PIP_INDEX_KEYS and section in rank:
            candidate = (rank[section], value.strip("'\"").split())
            found[name] = min(found.get(name, candidate), candidate)
    args = {}
    for name, (_, values) in found.items():
        arg = PIP_INDEX_KEYS[name]
        usable = [v for v in dict.fromkeys(values) if _usable_in_build(arg, v)]
        if usable:
            args[arg] = " ".join(usable)
    return args


def _usable_in_build(arg: str, value: str) -> bool:
    if arg == "PIP_TRUSTED_HOST":
        return True
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        print(f"build-images: not passing pip index {value} to the build (not reachable "
              "from a container)")
        return False
    if parts.username or parts.password:
        print(f"build-images: not passing pip index {parts.hostname} to the build (it carries "
              "credentials; use a mirror without them)")
        return False
    return True


def read_certificates(paths: list[str]) -> list[bytes]:
    """Read and check the PEM files given as ``--extra-ca-certs``."""
    contents = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"--extra-ca-certs {path}: {exc.strerror}") from exc
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise InputError(f"--extra-ca-certs {path}: not a PEM certificate file "
                             "(expected -----BEGIN CERTIFICATE-----)")
        contents.append(data)
    return contents


def stage_context(dest: Path, certificates: list[bytes]) -> Path:
    """Copy what the images need into ``dest`` (the build context) and return it."""
    if not (DOCKER_DIR / "Dockerfile").is_file():
        raise TbpipeError(f"{DOCKER_DIR}/Dockerfile not found: build-images runs from a tbpipe "
                          "source checkout")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in CONTEXT_FILES:
        source, target = ROOT / name, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, target)
    certs = dest / "docker" / "ca-certificates"
    certs.mkdir(parents=True, exist_ok=True)
    for own in sorted((DOCKER_DIR / "ca-certificates").glob("*.crt")):
        shutil.copy2(own, certs / own.name)
    for index, data in enumerate(certificates):
        (certs / f"tbpipe-extra-{index}.crt").write_bytes(data)
    return dest


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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``build-images``."""
    cmd = subparsers.add_parser("build-images", help="build (and push) the docker images")
    cmd.add_argument("--variant", action="append", choices=VARIANTS, default=None,
                     help="image to build, repeatable (default: all of cpu, gpu, tensorboard)")
    cmd.add_argument("--registry", default=None,
                     help="registry prefix of the tags (default: localhost, local only)")
    cmd.add_argument("--push", action="store_true", help="push the images after building")
    cmd.add_argument("--base-image", default=None,
                     help="Python 3.11 base image (offline: docker/bootstrap-base.sh builds "
                          "tbpipe-base:bookworm)")
    cmd.add_argument("--extra-ca-certs", action="append", default=None, metavar="FILE",
                     help="PEM CA certificates to trust in the images (TLS-inspecting proxies)")
    cmd.set_defaults(handler=run_build_images)


def run_build_images(args: argparse.Namespace) -> int:
    """``tbpipe build-images``: build, then a table of tags and sizes."""
    built = build_images(args.variant or list(VARIANTS), registry=args.registry,
                         base_image=args.base_image, extra_ca_certs=args.extra_ca_certs,
                         push=args.push)
    print("")
    for image in built:
        print(f"{image.variant:<12} {image.tag:<48} {human_size(image.size):>10}")
    return 0
