"""Compile-time options: where each step runs (image, GPUs, resources, retries, caching).

``configure_task`` applies a ``CompileOptions`` to one task of the pipeline. The image is set
per task with ``PipelineTask.set_container_image`` (it overrides the component's import-time
``base_image`` in the compiled spec), so ``--image-registry`` and ``--no-gpu`` change the YAML
without re-importing the components or touching the environment.

The options and the kind of step of each task: pipelines/placement_options.py; CPU and memory:
pipelines/step_resources.py; the compile flags: pipelines/placement_flags.py (all their names
are importable from here too).
"""

from __future__ import annotations

from pipelines.placement_flags import (
    add_compile_arguments,
    compile_options,
    key_value,
    resource_setting,
    resources_with_settings,
)
from pipelines.placement_options import (
    DEFAULT_GPU_TYPE,
    GKE_ACCELERATOR_LABEL,
    GPU_STEPS,
    STEP_KINDS,
    CompileOptions,
    step_kind,
)
from pipelines.step_resources import DEFAULT_RESOURCES, Resources, amount

__all__ = [  # the names of the modules placement is made of, importable from here as before
    "DEFAULT_GPU_TYPE", "DEFAULT_RESOURCES", "GKE_ACCELERATOR_LABEL", "GPU_RESOURCE",
    "GPU_STEPS", "IMAGE_UID", "STEP_KINDS", "CompileOptions", "Resources",
    "add_compile_arguments", "amount", "compile_options", "configure_task", "key_value",
    "resource_setting", "resources_with_settings", "step_kind",
]

GPU_RESOURCE = "nvidia.com/gpu"  # the Kubernetes extended resource the KFP driver limits
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
