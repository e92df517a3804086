"""``tbpipe run``: the whole pipeline locally through kfp.local, then where everything went."""

from __future__ import annotations

import argparse
import glob
import os

from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.pipelines.cli.flags import (
    add_param_arguments,
    add_sweep_arguments,
    params_from_args,
    sweep_from_args,
)
from tbpipe.pipelines.runners.local import (
    DEFAULT_PIPELINE_ROOT,
    RUNNERS,
    LocalRunResult,
    run_pipeline,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run``."""
    cmd = subparsers.add_parser("run", help="run the whole pipeline locally (kfp.local)")
    cmd.add_argument("--runner", choices=RUNNERS, default=RUNNERS[0])
    cmd.add_argument("--pipeline-root", default=None,
                     help=f"where kfp.local keeps artifacts (default: {DEFAULT_PIPELINE_ROOT})")
    cmd.add_argument("--gpus", default=None,
                     help="with --runner docker: GPUs for train/finetune ('all' or a count)")
    add_param_arguments(cmd)
    add_sweep_arguments(cmd)
    cmd.set_defaults(handler=run_local)


def run_local(args: argparse.Namespace) -> int:
    """Run, then print the result block."""
    params = params_from_args(args)
    sweep = sweep_from_args(args)
    root = os.path.abspath(args.pipeline_root or DEFAULT_PIPELINE_ROOT)
    runner_options = {"gpus": args.gpus} if args.runner == "docker" else {}
    result = run_pipeline(params, pipeline_root=root, runner=args.runner, sweep=sweep,
                          **runner_options)
    print_result(result)
    return 0


def print_result(result: LocalRunResult) -> None:
    """The closing lines of a run: accuracies, final model, logs and how to view them."""
    summary, params = result.summary, result.params
    print("")
    if "sweep" in summary:
        print_trials(summary["sweep"])
    for name in ("trained", "finetuned"):
        if name in summary["accuracy"]:
            print(f"test accuracy {summary['accuracy'][name]:.4f} ({name} model)")
    print(f"final model: {summary['final_model']} -> {summary['model_uri']}")
    if summary.get("promotion"):  # "promoted: new accuracy 0.9 vs baseline 0.8 (...)"
        print(f"{summary['promotion']['line']} -> {params.promote_to}")
    print(f"artifacts and metrics: {result.job_dir}")
    for report in sorted(glob.glob(os.path.join(result.job_dir, "*", "report"))):
        print(f"evaluation report: {report}")
    print(f"TensorBoard logs: {result.log_dir}")
    print(f"view: tbpipe tensorboard --log-root {params.log_root}")
    print(f"      then open {tensorboard_run_url(params.tensorboard_url, result.label)}")


def print_trials(sweep: dict) -> None:
    """The trial table of a sweep (select-trial's output), the best trial marked ``*``."""
    rows = sweep["trials"]
    keys = [key for key in rows[0] if key != "trial"]
    cells = [["trial", *keys]]
    for row in rows:
        mark = " *" if row["trial"] == sweep["best_trial"] else ""
        cells.append([row["trial"] + mark, *(f"{row[k]:.4f}" if k.startswith("val_")
                                             else str(row[k]) for k in keys)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    print(f"sweep: {len(rows)} trials, best {sweep['best_trial']} (by val_accuracy)")
    for line in cells:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                         strict=True)).rstrip())
