"""Flags shared by several sub-commands, each derived from the one table it sets.

Pipeline parameters (``run`` and ``submit``, the same flags and ``--params-file``) come from
the steps' table (:func:`tbpipe.components.registry.param_table`), as
:class:`~tbpipe.pipelines.training.PipelineParams` does; placement flags (``compile``,
``submit``) make a :class:`~tbpipe.pipelines.placement.CompileOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses

from tbpipe.components.common.errors import SettingError
from tbpipe.components.registry import param_table
from tbpipe.components.selection.config import TuneConfig
from tbpipe.components.training.launcher.placement import ENGINES, WorkerPlacement
from tbpipe.pipelines.cli.params_file import read_params_file
from tbpipe.pipelines.placement import (
    DATA_VOLUME_MOUNT,
    DEFAULT_GPU_TYPE,
    DEFAULT_RESOURCES,
    DEFAULT_SECRET_KEYS,
    GKE_ACCELERATOR_LABEL,
    LOG_VOLUME_MOUNT,
    VOLUME_LOG_ROOT,
    CompileOptions,
    Resources,
    SecretEnv,
    amount,
    is_quantity,
)
from tbpipe.pipelines.sweep import SWEEPABLE, Sweep, parse_sweep, parse_tune
from tbpipe.pipelines.training import PipelineParams

#: Parameters with no flag and no params-file key: tbpipe sets them (``model_source``).
NO_FLAG = tuple(name for name, param in param_table().items() if not param.flag)


def param_help(param) -> str:  # noqa: ANN001 - a Param
    """A parameter's ``--help`` line: what it does, its choices and its default.

    The default is added unless the help says it already (``default: no promotion``).
    """
    if param.type is bool:
        return f"{param.help} (a switch, off by default)"
    parts = [f"one of {', '.join(param.choices)}"] if param.choices else []
    if "default" not in param.help:
        parts.append(f"default: {param.default!r}")
    return f"{param.help} ({'; '.join(parts)})" if parts else param.help


def add_param_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per pipeline parameter (``--finetune-epochs`` for finetune_epochs).

    And ``--params-file``: the same parameters from a YAML or JSON file, keys named as the
    pipeline's parameters (``finetune_epochs``); a flag given as well wins.
    """
    group = parser.add_argument_group(
        "pipeline parameters", "each also a key of --params-file (e.g. finetune_epochs: 2); "
        "a flag wins over the file")
    group.add_argument("--params-file", default=None, metavar="FILE",
                       help="YAML or JSON mapping of pipeline parameter names to values")
    for name, param in param_table().items():
        if not param.flag:
            continue
        if param.type is bool:  # a switch, off by default
            group.add_argument(param.flag_name, dest=name, action="store_true", default=None,
                               help=param_help(param))
            continue
        kind = param.type if param.type in (int, float) else str
        group.add_argument(param.flag_name, dest=name, type=kind, default=None,
                           action="append" if param.repeatable else "store",
                           metavar="|".join(param.choices) if param.choices else name.upper(),
                           help=param_help(param))


def given_params(args: argparse.Namespace) -> dict[str, object]:
    """The pipeline parameters given: ``--params-file`` first, then the flags over it.

    Raises:
        InputError: the file cannot be read, is not a mapping, names an unknown parameter
            or gives a value of the wrong type.

    """
    values = read_params_file(args.params_file) if getattr(args, "params_file", None) else {}
    flags = {name: getattr(args, name, None) for name in param_table()}
    values.update({k: v for k, v in flags.items() if v is not None})
    for name, param in param_table().items():  # --notify A --notify B: one text, "A B"
        if param.repeatable and isinstance(values.get(name), list):
            values[name] = " ".join(str(value) for value in values[name])
    if values.get("gate"):  # --gate FILE: its text travels (read and checked once, here)
        from tbpipe.components.promotion.config import read_gate_file

        values["gate"] = read_gate_file(str(values["gate"]))
    return values


def params_from_args(args: argparse.Namespace, **overrides: object) -> PipelineParams:
    """PipelineParams from the params file and parsed flags (the rest keep their defaults).

    The edge: each value is parsed here, once (``--model`` into a ModelSpec), and checked.
    """
    values = given_params(args)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineParams(**values).validate()


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sweep`` (a fixed grid) and ``--tune`` (an adaptive search), and their settings.

    For ``run``, ``compile`` and ``submit``; :func:`sweep_from_args` reads them.
    """
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


    group = parser.add_argument_group(
        "hyper-parameter search (compiled into the pipeline as rounds of trials)")
    group.add_argument("--tune", action="append", default=[], metavar="KEY=SPACE",
                       help="search this train parameter or keyword of your model function "
                            "(repeatable): a range LOW..HIGH[:log|:int] or choices A|B|C, e.g. "
                            "learning_rate=1e-4..1e-1:log, batch_size=32..256:int")
    group.add_argument("--algorithm", default=None, metavar="NAME",
                       help=f"how trials are suggested (Optuna's samplers; default: "
                            f"{TuneConfig.algorithm})")
    group.add_argument("--pruner", default=None, metavar="NAME",
                       help="stop a trial early from its logged validation curve (median, "
                            f"hyperband or none; default: {TuneConfig.pruner})")
    group.add_argument("--trials", type=int, default=None, metavar="N",
                       help=f"trials the search runs at most (default: {TuneConfig.trials})")
    group.add_argument("--parallel", type=int, default=None, metavar="P",
                       help="trials a round trains at once on a cluster; each round is "
                            "suggested from every result before it (default: "
                            f"{TuneConfig.parallel}; tbpipe run trains one at a time)")
    group.add_argument("--max-failed-trials", type=int, default=None, metavar="K",
                       help="go on after up to K failed trials; one more fails the run "
                            f"(default: {TuneConfig.max_failed})")
    group.add_argument("--tune-goal", default=None, metavar="EXPR",
                       help="suggest no more trials once one meets this, e.g. "
                            "'val_accuracy>=0.99'")
    group.add_argument("--tune-timeout", type=int, default=None, metavar="SECONDS",
                       help="bound the whole search: no more trials once it has run this "
                            "long, running ones stop at their epoch's end (default: 0, "
                            "no bound)")
    from tbpipe.components.tuning.objectives import DEFAULT_OBJECTIVES

    default_objectives = ", ".join(f"{o.name}:{o.direction[:3]}" for o in DEFAULT_OBJECTIVES)
    group.add_argument("--objective", action="append", default=[], metavar="NAME:DIR",
                       help="what the search optimizes, max or min (repeatable: the Pareto "
                            "front is kept; the first objective leads; default: "
                            f"{default_objectives})")


def sweep_from_args(args: argparse.Namespace) -> Sweep | TuneConfig | None:
    """The search of the ``--sweep`` or ``--tune`` flags (None without either).

    A swept or tuned parameter's own flag (``--learning-rate`` with ``--sweep
    learning_rate=...``) is refused: the search sets it. ``--sweep`` and ``--tune`` together
    are refused with one line.

    Raises:
        SettingError: a flag is wrong.

    """
    if args.sweep and args.tune:
        raise SettingError("--tune", args.tune[0], "cannot go with --sweep: give the values "
                           "as choices, --tune KEY=V1|V2 --algorithm grid, or use one --sweep")
    sweep = parse_sweep(args.sweep, args.sweep_samples, args.max_parallel)
    if sweep is None:
        sweep = parse_tune(args.tune, algorithm=args.algorithm, pruner=args.pruner,
                           trials=args.trials, parallel=args.parallel,
                           max_failed=args.max_failed_trials, goal=args.tune_goal,
                           timeout_s=args.tune_timeout, objectives=args.objective)
    how = "swept by --sweep" if isinstance(sweep, Sweep) else "tuned by --tune"
    for key in sweep.keys if sweep else ():
        if getattr(args, key, None) is not None:
            flag = "--" + key.replace("_", "-")
            raise SettingError(flag, getattr(args, key),
                               f"is {how} {key}; give its values there only")
    return sweep
def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The KFP API connection and the run's place (``submit``, ``schedule create``).

    ``--endpoint``, ``--namespace``, ``--token-file``, ``--request-timeout``, ``--package``,
    ``--pipeline-root``, ``--service-account``.
    """
    from tbpipe.pipelines.runners.kfp_client import DEFAULT_REQUEST_TIMEOUT_S

    add = parser.add_argument
    add("--endpoint", default=None, metavar="URL",
        help="KFP API address, as kfp's --endpoint (default: $KFP_HOST, then kfp.Client's "
             "own lookup: $KF_PIPELINES_ENDPOINT, in-cluster, kubeconfig)")
    add("--namespace", default=None, help="KFP namespace (multi-user deployments)")
    add("--package", default=None, metavar="PATH",
        help="a compiled pipeline YAML (tbpipe compile --package; default: compile now)")
    add("--pipeline-root", default=None, help="where KFP keeps artifacts (default: the cluster's)")
    add("--service-account", default=None, help="Kubernetes service account of the run's pods")
    add("--token-file", default=None, help="file holding a bearer token for the KFP API "
        "(or set $KFP_TOKEN)")
    add("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, metavar="SECONDS",
        help="give up on a KFP API request that gets no answer for this long (default: "
             f"{DEFAULT_REQUEST_TIMEOUT_S:g}; a call tries to connect at most 3 times)")


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
    add("--distributed-engine", default=WorkerPlacement.engine, choices=ENGINES,
        help="what starts the workers of a multi-worker train/finetune step on a cluster: "
             "jobset (JobSet controller) or tfjob (Training Operator v1) (default: %(default)s)")
    add("--worker-deadline", type=int, default=WorkerPlacement.deadline_s, metavar="SECONDS",
        help="how long a multi-worker step waits for its workers (default: %(default)s)")
    add("--secret", action="append", default=[], metavar="NAME[:KEY,...]",
        help="give every step these keys of Kubernetes Secret NAME as environment variables "
             f"(repeatable; without keys: {', '.join(DEFAULT_SECRET_KEYS)}, each optional)")


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
        log_volume=args.log_volume, data_volume=args.data_volume,
        distributed_engine=args.distributed_engine, worker_deadline=args.worker_deadline,
        secrets=tuple(SecretEnv.parse(text) for text in args.secret))
