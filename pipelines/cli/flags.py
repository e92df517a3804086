"""Flags shared by several sub-commands, each derived from the one table it sets.

Pipeline parameters (``run``, and ``submit`` through ``--param``) come from
:class:`~tbpipe.pipelines.training.PipelineParams`; placement flags (``compile``, ``submit``)
make a :class:`~tbpipe.pipelines.placement.CompileOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses

from tbpipe.pipelines.placement import (
    DATA_VOLUME_MOUNT,
    DEFAULT_GPU_TYPE,
    DEFAULT_RESOURCES,
    GKE_ACCELERATOR_LABEL,
    LOG_VOLUME_MOUNT,
    VOLUME_LOG_ROOT,
    CompileOptions,
    Resources,
    amount,
    is_quantity,
)
from tbpipe.pipelines.training import PARAM_CHOICES, PipelineParams

#: Help where the field's default does not say it all.
PARAM_HELP = {
    "resume": "continue the run of this --run-name (interrupted or finished) from its "
              "checkpoints instead of refusing an existing run",
    "log_root": "default: ./tbpipe-runs/logs, made absolute when the run starts",
    "run_name": "default: run-YYYYmmdd-HHMMSS",
    "model": "the model to train: builtin:cnn (default), path/to/file.py:function, "
             "package.module:function, a .keras file or a Model folder (docs/models.md)",
}
#: Parameters with no flag: tbpipe sets them (``model_source``: --model's file, read here).
NO_FLAG = ("model_source",)


def add_param_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per PipelineParams field (``--finetune-epochs`` for finetune_epochs)."""
    group = parser.add_argument_group("pipeline parameters")
    for field in dataclasses.fields(PipelineParams):
        if field.name in NO_FLAG:
            continue
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:  # a switch, off by default
            group.add_argument(flag, dest=field.name, action="store_true", default=None,
                               help=PARAM_HELP.get(field.name, "default: off"))
            continue
        kind = field.type if field.type in (int, float) else str
        choices = PARAM_CHOICES.get(field.name)  # listed here, checked by the config
        group.add_argument(flag, dest=field.name, type=kind, default=None,
                           metavar="|".join(choices) if choices else field.name.upper(),
                           help=PARAM_HELP.get(field.name, f"default: {field.default!r}"))


def params_from_args(args: argparse.Namespace, **overrides: object) -> PipelineParams:
    """PipelineParams from parsed flags (unset flags keep their defaults)."""
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(PipelineParams)}
    values = {k: v for k, v in values.items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineParams(**values).validate()


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
    add("--log-volume", default="", metavar="PVC",
        help=f"mount this PersistentVolumeClaim at {LOG_VOLUME_MOUNT} in every step; log_root "
             f"then defaults to {VOLUME_LOG_ROOT}")
    add("--data-volume", default="", metavar="PVC",
        help=f"mount this PersistentVolumeClaim at {DATA_VOLUME_MOUNT} in every step "
             f"(pass data={DATA_VOLUME_MOUNT}/...)")


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


def resources_with_settings(cpu: list, memory: list) -> dict[str, Resources]:
    """DEFAULT_RESOURCES with the ``--cpu``/``--memory`` settings (from resource_setting).

    A request alone keeps the default limit, unless the request outgrows it: then the limit
    is the request.
    """
    resources = dict(DEFAULT_RESOURCES)
    for kind, settings in (("cpu", cpu), ("memory", memory)):
        for step, request, limit in settings:
            old = getattr(resources[step], f"{kind}_limit")
            if limit is None:
                valid = is_quantity(kind, request)  # else CompileOptions says what is wrong
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
        node_selectors=tuple(args.node_selector),
        resources=resources_with_settings(args.cpu, args.memory),
        retries=args.retries, retry_backoff=args.retry_backoff,
        cache_preprocess=not args.no_cache_preprocess, cache_training=args.cache_training,
        log_volume=args.log_volume, data_volume=args.data_volume)
