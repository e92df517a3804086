"""The one image tag all component specs use, derived from the package version.

Compiling for a registry rewrites one value (``TBPIPE_IMAGE_REGISTRY`` or
``--registry``), so component specs and images cannot drift.
"""

from __future__ import annotations

import os
from importlib import metadata

IMAGE_NAME = "tbpipe"
DEFAULT_REGISTRY = "localhost"


def package_version() -> str:
    """The installed tbpipe version (``0.0.0`` when run from a bare checkout)."""
    try:
        return metadata.version("tbpipe")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def image(variant: str = "cpu", registry: str | None = None) -> str:
    """The component image for ``variant`` (``cpu`` or ``gpu``), e.g. ``localhost/tbpipe:0.1.0``."""
    if variant not in ("cpu", "gpu", "tensorboard"):
        raise ValueError(f"unknown image variant {variant!r}: use cpu, gpu or tensorboard")
    registry = registry or os.environ.get("TBPIPE_IMAGE_REGISTRY") or DEFAULT_REGISTRY
    suffix = "" if variant == "cpu" else f"-{variant}"
    return f"{registry.rstrip('/')}/{IMAGE_NAME}:{package_version()}{suffix}"


IMAGE = image("cpu")
GPU_IMAGE = image("gpu")
