"""``tbpipe workers-manifest``: the JobSet or TFJob a multi-worker step would create.

Printed as ``kubectl create --dry-run=client -o yaml`` prints an object (keys sorted), from
the same placement flags as ``compile``, so a user can read it, diff it or apply it by hand.
What only the running step knows is left out or a placeholder: the owner reference to the
step's pod, its service account and environment, and the task's URI in the command.
"""

from __future__ import annotations

import argparse
import sys

from tbpipe.pipelines.cli.flags import add_compile_arguments, compile_options

#: The worker entry point a step runs on every worker, its task's URI a placeholder here.
DRY_RUN_COMMAND = ("python", "-m", "tbpipe.components.training.worker", "TASK_URI")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``workers-manifest``."""
    # "resolve": --workers is this command's own, whatever the compile flags hold
    cmd = subparsers.add_parser(
        "workers-manifest", help="print the JobSet/TFJob a multi-worker step would create",
        conflict_handler="resolve")
    add_compile_arguments(cmd)
    cmd.add_argument("--workers", type=int, required=True, metavar="N",
                     help="how many workers (2 or more; worker 0 is the chief)")
    cmd.add_argument("--step", choices=("train", "finetune"), default="train",
                     help="the step whose workers to show (default: %(default)s)")
    cmd.add_argument("--run-id", default="RUN_ID", metavar="ID",
                     help="the KFP run id the set's name derives from (default: %(default)s)")
    cmd.add_argument("--namespace", default=None, metavar="NAMESPACE",
                     help="put the object in this namespace (default: none, kubectl's own)")
    cmd.set_defaults(handler=run_workers_manifest)


def run_workers_manifest(args: argparse.Namespace) -> int:
    """Print the manifest as YAML on standard output."""
    import yaml

    from tbpipe.components.common.errors import InputError
    from tbpipe.components.training.launcher.manifests import worker_set_manifest
    from tbpipe.components.training.launcher.placement import WorkerPlacement
    from tbpipe.pipelines.placement import worker_placement

    if args.workers < 2:
        raise InputError(f"--workers {args.workers}: a worker set has 2 or more workers "
                         "(one worker trains in the step's own pod)")
    placement = WorkerPlacement.from_json(worker_placement(compile_options(args), args.step))
    manifest = worker_set_manifest(placement, DRY_RUN_COMMAND, [], args.workers,
                                   run_id=args.run_id, step=args.step)
    if args.namespace:
        manifest["metadata"]["namespace"] = args.namespace
    sys.stdout.write(yaml.safe_dump(manifest, sort_keys=True, default_flow_style=False))
    return 0
