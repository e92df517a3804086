"""Compile-time options: where each step runs (image, GPUs, resources, retries, caching)."""

from __future__ import annotations

import dataclasses

GPU_STEPS = ("train", "finetune")


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """How the pipeline is compiled (not run-time parameters)."""

    image_registry: str | None = None
    gpu: bool = True
    cache_training: bool = False


def configure_task(task, step: str, options: CompileOptions):  # noqa: ANN001, ANN201
    """Apply placement, resources, retries and caching to one pipeline task."""
    task.set_caching_options(step not in GPU_STEPS or options.cache_training)
    return task
