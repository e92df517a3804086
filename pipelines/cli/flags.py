"""Flags shared by several sub-commands, each derived from the one table it sets.

Pipeline parameters (``run`` and ``submit``, the same flags and ``--params-file``) come from
:class:`~tbpipe.pipelines.training.PipelineParams`; placement flags (``compile``, ``submit``)
make a :class:`~tbpipe.pipelines.placement.CompileOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from tbpipe.components.common.errors import InputError, SettingError
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
from tbpipe.pipelines.sweep import SWEEPABLE, Sweep, parse_sweep
from tbpipe.pipelines.training import PARAM_CHOICES, PipelineParams

#: The data sources ``--data`` and ``--finetune-data`` take.
DATA_FORMATS = ("a .csv, .csv.gz, .parquet or .pq table (a 'label' column and pixel0..N "
                "columns), a folder of MNIST IDX files, a folder of image folders (one per "
                "class), builtin:digits or builtin:mnist; a local path or gs://")
#: Help where the field's default does not say it all.
PARAM_HELP = {
    "data": f"training data (default: builtin:digits): {DATA_FORMATS}",
    "finetune_data": "data to fine-tune on, in the same formats as --data (default: none: "
                     "fine-tune on --data)",
    "resume": "continue the run of this --run-name (interrupted or finished) from its "
              "checkpoints instead of refusing an existing run",
    "log_root": "where every step's TensorBoard logs go; run: default ./tbpipe-runs/logs, made "
                "absolute when the run starts; submit: required, e.g. gs://BUCKET/logs",
    "run_name": "default: run-YYYYmmdd-HHMMSS",
    "model": "the model to train: builtin:cnn (default), path/to/file.py:function, "
             "package.module:function, a .keras file or a Model folder (docs/models.md)",
    "promote_to": "production folder (local or gs://): the run's model is copied there only "
                  "if it beats the baseline; default: no promotion",
    "baseline_model": "the model to beat (Model folder or .keras); default: what "
                      "--promote-to holds",
    "min_improvement": "how much the new model must beat the baseline by (default: 0)",
    "force_promote": "promote whatever the gate says (needs --reason; recorded)",
    "gate": "a gate file (YAML, docs/gate.md): what the model must meet to be promoted; "
            "read here, its text travels to the promote step; default: --promotion-metric "
            "must improve by more than --min-improvement",
    "reason": "why --force-promote (recorded in the registry)",
    "mlflow_uri": "also register each promotion in this MLflow tracking server "
                  "(http://HOST:PORT; pip install 'tbpipe[mlflow]')",
}
#: Parameters with no flag: tbpipe sets them (``model_source``: --model's file, read here).
NO_FLAG = ("model_source",)


def add_param_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per PipelineParams field (``--finetune-epochs`` for finetune_epochs).

    And ``--params-file``: the same parameters from a YAML or JSON file, keys named as the
    pipeline's parameters (``finetune_epochs``); a flag given as well wins.
    """
    group = parser.add_argument_group(
        "pipeline parameters", "each also a key of --params-file (e.g. finetune_epochs: 2); "
        "a flag wins over the file")
    group.add_argument("--params-file", default=None, metavar="FILE",
                       help="YAML or JSON mapping of pipeline parameter names to values")
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
        default_help = f"default: {field.default!r}"
        if choices:
            default_help = f"one of {', '.join(choices)}; {default_help}"
        group.add_argument(flag, dest=field.name, type=kind, default=None,
                           metavar="|".join(choices) if choices else field.name.upper(),
                           help=PARAM_HELP.get(field.name, default_help))


def given_params(args: argparse.Namespace) -> dict[str, object]:
    """The pipeline parameters given: ``--params-file`` first, then the flags over it.

    Raises:
        InputError: the file cannot be read, is not a mapping, names an unknown parameter
            or gives a value of the wrong type.

    """
    values = read_params_file(args.params_file) if getattr(args, "params_file", None) else {}
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(PipelineParams)}
    values.update({k: v for k, v in flags.items() if v is not None})
    if values.get("gate"):  # --gate FILE: its text travels (read and checked once, here)
        from tbpipe.components.promotion.gate import read_gate_file

        values["gate"] = read_gate_file(str(values["gate"]))
    return values


def params_from_args(args: argparse.Namespace, **overrides: object) -> PipelineParams:
    """PipelineParams from the params file and parsed flags (the rest keep their defaults)."""
    values = given_params(args)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineParams(**values).validate()


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sweep``, ``--sweep-samples``, ``--max-parallel`` (``run``, ``compile``, ``submit``)."""
    group = parser.add_argument_group("hyper-parameter sweep (compiled into the pipeline)")
    group.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="train once per combination of these values, then go on with the "
                            "best trial by validation accuracy (repeatable); keys: "
                            f"{', '.join(SWEEPABLE)}")
    group.add_argument("--sweep-samples", type=int, default=0, metavar="N",
                       help="train N random picks from the grid (seeded) instead of all")
    group.add_argument("--max-parallel", type=int, default=0, metavar="N",
                       help="trials training at once on a cluster (default: 0, no limit; "
                            "tbpipe run trains one at a time)")


def sweep_from_args(args: argparse.Namespace) -> Sweep | None:
    """The Sweep of the ``--sweep`` flags (None without any); SettingError if it is wrong.

    A swept parameter's own flag (``--learning-rate`` with ``--sweep learning_rate=...``)
    is refused: the sweep sets it.
    """
    sweep = parse_sweep(args.sweep, args.sweep_samples, args.max_parallel)
    for key in sweep.keys if sweep else ():
        if getattr(args, key, None) is not None:
            flag = "--" + key.replace("_", "-")
            raise SettingError(flag, getattr(args, key),
                               f"is swept by --sweep {key}; give its values there only")
    return sweep
def read_params_file(path: str) -> dict[str, object]:
    """Pipeline parameters from a YAML or JSON file (JSON is YAML), typed as PipelineParams.

    Raises:
        InputError: one line naming the file and what is wrong in it.

    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except OSError as exc:
        raise InputError(f"--params-file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"--params-file {path}: not YAML or JSON ({str(exc).splitlines()[0]})"
                         ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise InputError(f"--params-file {path}: expected a mapping of parameter names to "
                         f"values, got {type(loaded).__name__}")
    fields = {f.name: f.type for f in dataclasses.fields(PipelineParams)}
    values = {}
    for key, value in loaded.items():
        name = str(key).replace("-", "_")
        if name not in fields or name in NO_FLAG:
            known = ", ".join(sorted(set(fields) - set(NO_FLAG)))
            raise InputError(f"--params-file {path}: unknown parameter {key!r} (known: {known})")
        values[name] = typed_value(path, name, value, fields[name])
    return values


def typed_value(path: str, name: str, value: object, kind: object) -> object:
    """``value`` from a params file as the parameter's type; InputError if it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")
    raise InputError(f"--params-file {path}: {name}: expected {expected}, got "
                     f"{json.dumps(value, default=str)}")


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    """Compile-time flags (shared by ``compile`` and ``submit``)."""
    group = parser.add_argument_group("placement (compile options)")
    add = group.add_argument
    add("--registry", dest="image_registry", default=None, metavar="REGISTRY",
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
