"""``CompileOptions``: how the pipeline is compiled, and the kind of step each task is.

Run-time parameters live in pipelines/options.py; these options change the compiled spec
(images, GPUs, node selectors, resources, retries, caching), applied per task by
``pipelines.placement.configure_task``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType

from components._image import image
from components.common.errors import InputError
from pipelines.step_resources import DEFAULT_RESOURCES, Resources

GPU_STEPS = ("train", "finetune")
# Task display name (as pipelines/training.py names it) -> the resource profile it uses.
STEP_KINDS = MappingProxyType({
    "preprocess": "preprocess", "preprocess-finetune-data": "preprocess",
    "train": "train", "finetune": "finetune",
    "evaluate": "evaluate", "evaluate-finetuned": "evaluate",
    "decide-finetune": "select", "select-model": "select",
})
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
DEFAULT_GPU_TYPE = "nvidia-tesla-t4"


@dataclasses.dataclass(frozen=True)
class CompileOptions:
    """How the pipeline is compiled (not run-time parameters).

    Attributes:
        image_registry: Registry of the component images (default: ``TBPIPE_IMAGE_REGISTRY``
            or ``localhost``, see components/_image.py).
        gpu: Give train and finetune GPUs; False compiles a CPU-only pipeline.
        gpu_type: The GPU model, the default value of the GPU node selector.
        gpu_count: GPUs per training step.
        gpu_node_selector_key: Node label selecting GPU nodes; empty: no GPU node selector.
        gpu_node_selector_value: Its value (default: ``gpu_type``).
        node_selectors: More ``(key, value)`` node selectors for train and finetune.
        resources: Requests/limits per kind of step, over DEFAULT_RESOURCES.
        retries: Retries of train and finetune after a failure (0: none).
        retry_backoff: Wait before the first retry (e.g. ``60s``).
        retry_backoff_factor: Each further wait is this many times longer.
        cache_preprocess: Let KFP reuse preprocess results.
        cache_training: Let KFP reuse train/finetune results (off: always train).

    """

    image_registry: str | None = None
    gpu: bool = True
    gpu_type: str = DEFAULT_GPU_TYPE
    gpu_count: int = 1
    gpu_node_selector_key: str = GKE_ACCELERATOR_LABEL
    gpu_node_selector_value: str | None = None
    node_selectors: tuple[tuple[str, str], ...] = ()
    resources: Mapping[str, Resources] = dataclasses.field(default_factory=dict)
    retries: int = 2
    retry_backoff: str = "60s"
    retry_backoff_factor: float = 2.0
    cache_preprocess: bool = True
    cache_training: bool = False

    def __post_init__(self) -> None:
        if self.gpu_count < 1:
            raise InputError(f"--gpu-count must be >= 1 (got {self.gpu_count}); "
                             "use --no-gpu for a CPU-only pipeline")
        if self.retries < 0:
            raise InputError(f"--retries must be >= 0 (got {self.retries})")
        if not re.match(r"^[0-9]+(\.[0-9]+)?s$", self.retry_backoff):
            raise InputError("--retry-backoff must be seconds like 60s "
                             f"(got {self.retry_backoff!r})")
        unknown = sorted(set(self.resources) - set(DEFAULT_RESOURCES))
        if unknown:
            raise InputError(f"unknown step kind {unknown[0]!r} in resources: use one of "
                             f"{', '.join(DEFAULT_RESOURCES)}")
        merged = {**DEFAULT_RESOURCES, **self.resources}
        for kind, resources in merged.items():
            resources.validate(kind)
        object.__setattr__(self, "resources", MappingProxyType(merged))

    def image_for(self, step: str) -> str:
        """Return the image of ``step``: GPU for train/finetune when ``gpu``, else CPU."""
        variant = "gpu" if self.gpu and step in GPU_STEPS else "cpu"
        return image(variant, self.image_registry)

    def node_selector_for(self, step: str) -> dict[str, str]:
        """Return the node selector labels of ``step`` (only train and finetune have any)."""
        if step not in GPU_STEPS:
            return {}
        labels = {}
        if self.gpu and self.gpu_node_selector_key:
            labels[self.gpu_node_selector_key] = self.gpu_node_selector_value or self.gpu_type
        labels.update(self.node_selectors)
        return labels

    def caching_for(self, step: str) -> bool:
        """Whether KFP may reuse a cached result of ``step``."""
        kind = step_kind(step)
        if kind in GPU_STEPS:
            return self.cache_training
        return self.cache_preprocess if kind == "preprocess" else True


def step_kind(step: str) -> str:
    """Return the resource profile of a task name (``evaluate-finetuned`` -> ``evaluate``)."""
    try:
        return STEP_KINDS[step]
    except KeyError:
        raise ValueError(f"no placement for step {step!r}: add it to STEP_KINDS "
                         f"({', '.join(STEP_KINDS)})") from None
