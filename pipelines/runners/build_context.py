"""The docker build context of ``tbpipe build-images``, staged apart from the checkout.

What the images need (the project, docker/constraints.txt, docker/requirements.py, the
Dockerfiles, CA certificates) is copied into a temporary folder, so nothing in the checkout
changes and nothing else (virtual environments, runs) is sent; this machine's pip index
settings become build args where a container can use them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

from tbpipe.components.common.errors import InputError, TbpipeError

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
CONTEXT_FILES = ("pyproject.toml", "README.md", "components", "pipelines",
                 "docker/constraints.txt", "docker/requirements.py", "docker/Dockerfile",
                 "docker/tensorboard.Dockerfile")
PIP_INDEX_KEYS = {"index-url": "PIP_INDEX_URL", "extra-index-url": "PIP_EXTRA_INDEX_URL",
                  "trusted-host": "PIP_TRUSTED_HOST"}


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
        usable = [v for v in dict.fromkeys(values) if usable_in_build(arg, v)]
        if usable:
            args[arg] = " ".join(usable)
    return args


def usable_in_build(arg: str, value: str) -> bool:
    """Whether a pip index setting may go into a build arg (says why not when it may not)."""
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
