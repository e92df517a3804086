"""Compile-time options: where each step runs (image, GPUs, resources, retries, caching).

``configure_task`` applies a ``CompileOptions`` to one task of the pipeline. The image is set
per task with ``PipelineTask.set_container_image`` (it overrides the component's import-time
``base_image`` in the compiled spec), so ``--image-registry`` and ``--no-gpu`` change the YAML
without re-importing the components or touching the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType

from components._image import image
from components.common.errors import InputError

GPU_STEPS = ("train", "finetune")
# Task display name (as pipelines/training.py names it) -> the resource profile it uses.
STEP_KINDS = MappingProxyType({
    "preprocess": "preprocess", "preprocess-finetune-data": "preprocess",
    "train": "train", "finetune": "finetune",
    "evaluate": "evaluate", "evaluate-finetuned": "evaluate",
    "decide-finetune": "select", "select-model": "select",
})
GPU_RESOURCE = "nvidia.com/gpu"  # the Kubernetes extended resource the KFP driver limits
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
DEFAULT_GPU_TYPE = "nvidia-tesla-t4"
_QUANTITY = {"cpu": re.compile(r"^([0-9]*[.])?[0-9]+m?$"),
             "memory": re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")}
_MEMORY_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
                 "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU and memory requests/limits of one kind of step (Kubernetes quantities)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str

    def validate(self, step: str) -> Resources:
        """Check the quantities' format and that no request exceeds its limit."""
        for kind, example in (("cpu", "500m or 2"), ("memory", "512Mi or 4Gi")):
            request, limit = getattr(self, f"{kind}_request"), getattr(self, f"{kind}_limit")
            for value in (request, limit):
                if not _QUANTITY[kind].match(value):
                    raise InputError(f"--{kind} {step}: {value!r} is not a Kubernetes {kind} "
                                     f"quantity (e.g. {example})")
            if amount(kind, request) > amount(kind, limit):
                raise InputError(f"--{kind} {step}: request {request} exceeds limit {limit}")
        return self


# Fit a GKE n1-standard-4 + T4 node (about 3.9 CPU / 12 GiB allocatable) or an e2-standard-4.
DEFAULT_RESOURCES = MappingProxyType({
    "preprocess": Resources("1", "2", "2Gi", "4Gi"),
    "train": Resources("3", "6", "8Gi", "12Gi"),
    "finetune": Resources("3", "6", "8Gi", "12Gi"),
    "evaluate": Resources("1", "2", "2Gi", "4Gi"),
    "select": Resources("250m", "1", "512Mi", "1Gi"),
})


def amount(kind: str, quantity: str) -> float:
    """Convert a well-formed ``cpu``/``memory`` quantity to cores/bytes (``500m`` -> 0.5)."""
    if kind == "cpu":
        return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)
    number, unit = re.match(r"^([0-9]+)(\D*)$", quantity).groups()
    return float(number) * _MEMORY_UNITS[unit]


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


IMAGE_UID = 1000  # the tbpipe user of docker/Dockerfile


def configure_task(task, step: str, options: CompileOptions):  # noqa: ANN001, ANN201
    """Apply image, GPUs, node selectors, tolerations, resources, retries and caching to a task.

    Args:
        task: The ``PipelineTask`` (a component called inside the pipeline).
        step: Its display name, a key of STEP_KINDS.
        options: What to apply.

    Returns:
        The task, configured.

    """
    from kfp import kubernetes

    kind = step_kind(step)
    task.set_container_image(options.image_for(kind))
    res = options.resources[kind]
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    if kind in GPU_STEPS:
        if options.gpu:
            task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(options.gpu_count)
            kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists",
                                      effect="NoSchedule")
        for key, value in options.node_selector_for(kind).items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        if options.retries:
            task.set_retry(num_retries=options.retries, backoff_duration=options.retry_backoff,
                           backoff_factor=options.retry_backoff_factor)
    task.set_caching_options(options.caching_for(step))
    # the images' non-root tbpipe user; kfp-kubernetes has no read-only root file system knob
    kubernetes.set_security_context(task, run_as_user=IMAGE_UID, run_as_group=IMAGE_UID,
                                    run_as_non_root=True)
    return task


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    """Compile-time flags (shared by ``compile`` and ``submit``)."""
    group = parser.add_argument_group("placement (compile options)")
    add = group.add_argument
    add("--image-registry", default=None, metavar="REGISTRY",
        help="registry the component images are pulled from (default: $TBPIPE_IMAGE_REGISTRY "
             "or localhost), e.g. europe-docker.pkg.dev/PROJECT/tbpipe")
    add("--no-gpu", action="store_true", help="compile a CPU-only pipeline")
    add("--gpu-type", default=DEFAULT_GPU_TYPE, help="GPU model (default: %(default)s)")
    add("--gpu-count", type=int, default=1, metavar="N", help="GPUs per training step (default: 1)")
    add("--gpu-node-selector-key", default=GKE_ACCELERATOR_LABEL, metavar="KEY",
        help="node label selecting GPU nodes (default: %(default)s; '' for none)")
    add("--gpu-node-selector-value", default=None, metavar="VALUE",
        help="its value (default: --gpu-type)")
    add("--node-selector", action="append", type=key_value, default=[], metavar="KEY=VALUE",
        help="another node selector for train and finetune (repeatable)")
    add("--cpu", action="append", type=resource_setting, default=[], metavar="STEP=REQ[,LIMIT]",
        help=f"CPU of a kind of step ({', '.join(DEFAULT_RESOURCES)}), e.g. train=4,8")
    add("--memory", action="append", type=resource_setting, default=[],
        metavar="STEP=REQ[,LIMIT]", help="memory of a kind of step, e.g. train=16Gi,24Gi")
    add("--retries", type=int, default=2, metavar="N",
        help="retries of train and finetune after a failure (default: 2)")
    add("--retry-backoff", default="60s", metavar="SECONDS",
        help="wait before the first retry, doubled each time (default: 60s)")
    add("--cache-training", action="store_true",
        help="let KFP reuse cached train/finetune results (default: always train)")
    add("--no-cache-preprocess", action="store_true", help="always rerun preprocess")


def key_value(text: str) -> tuple[str, str]:
    """``key=value`` -> ``(key, value)``; argparse turns the error into one line."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def resource_setting(text: str) -> tuple[str, str, str | None]:
    """``train=2,4`` -> ``("train", "2", "4")``; the limit is optional."""
    kind, value = key_value(text)
    if kind not in DEFAULT_RESOURCES:
        raise argparse.ArgumentTypeError(
            f"unknown step {kind!r} in {text!r}: use one of {', '.join(DEFAULT_RESOURCES)}")
    request, _, limit = value.partition(",")
    return kind, request.strip(), limit.strip() or None


def _with_settings(cpu: list, memory: list) -> dict[str, Resources]:
    resources = dict(DEFAULT_RESOURCES)
    for kind, settings in (("cpu", cpu), ("memory", memory)):
        for step, request, limit in settings:
            old = getattr(resources[step], f"{kind}_limit")
            if limit is None:  # keep the default limit unless the request outgrows it
                valid = _QUANTITY[kind].match(request)
                limit = request if valid and amount(kind, request) > amount(kind, old) else old
            resources[step] = dataclasses.replace(
                resources[step], **{f"{kind}_request": request, f"{kind}_limit": limit})
    return resources


def compile_options(args: argparse.Namespace) -> CompileOptions:
    """CompileOptions from flags added by ``add_compile_arguments`` (InputError if invalid)."""
    return CompileOptions(
        image_registry=args.image_registry, gpu=not args.no_gpu, gpu_type=args.gpu_type,
        gpu_count=args.gpu_count, gpu_node_selector_key=args.gpu_node_selector_key,
        gpu_node_selector_value=args.gpu_node_selector_value,
        node_selectors=tuple(args.node_selector), resources=_with_settings(args.cpu, args.memory),
        retries=args.retries, retry_backoff=args.retry_backoff,
        cache_preprocess=not args.no_cache_preprocess, cache_training=args.cache_training)
