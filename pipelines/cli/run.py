"""``tbpipe run``: the whole pipeline locally through kfp.local, then where everything went."""

from __future__ import annotations

import argparse
import os
import sys

from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.pipelines.cli.flags import (
    add_param_arguments,
    add_sweep_arguments,
    params_from_args,
    sweep_from_args,
)
from tbpipe.pipelines.cli.output import (
    add_output_argument,
    emit,
    result_output,
    tbpipe_command,
    wants_json,
)
from tbpipe.pipelines.runners.local import (
    DEFAULT_PIPELINE_ROOT,
    RUNNERS,
    LocalRunResult,
    run_pipeline,
)

#: How the result block names the model each evaluate step scored.
REPORT_LABELS = {"evaluate": "trained", "evaluate-finetuned": "fine-tuned"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``run``."""
    cmd = subparsers.add_parser(
        "run", help="run the whole pipeline locally (kfp.local)",
        description="Run preprocess -> check-data -> train -> evaluate -> [finetune -> "
                    "evaluate] -> select on this machine. Shows one line per step and the "
                    "result; everything else goes to a log file whose path is printed "
                    "(--verbose shows it all).")
    cmd.add_argument("--runner", choices=RUNNERS, default=RUNNERS[0],
                     help="subprocess (default): steps run in this Python; docker: in the "
                          "images")
    cmd.add_argument("--pipeline-root", default=None,
                     help=f"where kfp.local keeps artifacts (default: {DEFAULT_PIPELINE_ROOT})")
    cmd.add_argument("--gpus", default=None,
                     help="with --runner docker: GPUs for train/finetune ('all' or a count)")
    cmd.add_argument("-v", "--verbose", action="store_true",
                     help="stream everything kfp.local and the steps print")
    add_output_argument(cmd)
    add_param_arguments(cmd)
    add_sweep_arguments(cmd)
    cmd.set_defaults(handler=run_local)


def run_local(args: argparse.Namespace) -> int:
    """Run, then print the result block (or, with ``--output json``, the result object)."""
    params = params_from_args(args)
    sweep = sweep_from_args(args)
    root = os.path.abspath(args.pipeline_root or DEFAULT_PIPELINE_ROOT)
    runner_options = {"gpus": args.gpus} if args.runner == "docker" else {}
    with result_output(args) as out:
        result = run_pipeline(params, pipeline_root=root, runner=args.runner, sweep=sweep,
                              verbose=args.verbose, screen=sys.stdout, **runner_options)
        if wants_json(args):
            emit(out, run_result(result))
        else:
            print_result(result)
    return 0


def run_result(result: LocalRunResult) -> dict:
    """The run's result as one JSON-able object (``--output json``)."""
    summary, params = result.summary, result.params
    return {
        "experiment": params.experiment, "run_name": params.run_name,
        "run_id": None,  # a KFP run id exists on a cluster only; kfp.local's job name:
        "kfp_job": os.path.basename(result.job_dir),
        "test_accuracy": summary["final_accuracy"], "accuracy": summary["accuracy"],
        "final_model": summary["final_model"], "model_uri": summary["model_uri"],
        "log_dir": result.log_dir, "log_root": params.log_root,
        "tensorboard_url": tensorboard_run_url(params.tensorboard_url, result.label),
        "artifacts": result.job_dir, "run_log": result.run_log,
        "reports": {REPORT_LABELS.get(step, step): path
                    for step, path in result.reports.items()},
        "html_reports": {REPORT_LABELS.get(step, step): path
                         for step, path in result.html_reports.items()},
        "promotion": summary.get("promotion"), "sweep": summary.get("sweep"),
    }


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
    for step, report in result.reports.items():
        kind = (f"evaluation report ({REPORT_LABELS[step]} model)" if step in REPORT_LABELS
                else f"{step} report")
        html = result.html_reports.get(step)
        print(f"{kind}: {report}" + (f" (HTML, with the misclassified images: {html})"
                                     if html else ""))
    print(f"TensorBoard logs: {result.log_dir}")
    print(f"view: {tbpipe_command()} tensorboard --log-root {params.log_root}")
    print(f"      then open {tensorboard_run_url(params.tensorboard_url, result.label)}")


def print_trials(sweep: dict) -> None:
    """The trial table of a sweep or a search, the best trial marked ``*``.

    A sweep's (select-trial's output): each trial's values and validation figures. A
    search's (select-tuned's, it has ``objectives``): state (complete, pruned, failed),
    epochs run, the objectives, the parameters, Pareto front, error.
    """
    rows = sweep["trials"]
    if "objectives" in sweep:
        keys = tuned_columns(sweep)
        states = [row["state"] for row in rows]
        counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        stopped = f"; stopped early: {sweep['stopped']}" if sweep.get("stopped") else ""
        title = (f"tune: {len(rows)} trials ({counts}), best {sweep['best_trial']} (by "
                 f"{', '.join(sweep['objectives'])}){stopped}")
    else:
        keys = [key for key in rows[0] if key != "trial"]
        title = f"sweep: {len(rows)} trials, best {sweep['best_trial']} (by val_accuracy)"
    cells = [["trial", *keys]]
    for row in rows:
        mark = " *" if row["trial"] == sweep["best_trial"] else ""
        cells.append([row["trial"] + mark, *(table_cell(k, row.get(k)) for k in keys)])
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    print(title)
    for line in cells:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                         strict=True)).rstrip())


def tuned_columns(outcome: dict) -> list[str]:
    """A search's table columns: state, epochs, objectives, parameters, front, error."""
    rows = outcome["trials"]
    objectives = list(outcome["objectives"])
    fixed = {"trial", "state", "epochs_run", "pareto", "best", "error", *objectives}
    params = [key for key in rows[0] if key not in fixed] if rows else []
    error = ["error"] if any(row.get("error") for row in rows) else []
    front = ["pareto"] if len(objectives) > 1 else []
    return ["state", "epochs_run", *objectives, *params, *front, *error]


def table_cell(key: str, value: object) -> str:
    """One cell: metrics to 4 decimals, other numbers to 4 significant digits, none blank."""
    if value is None or value is False or value == "":
        return "-" if key != "error" else ""
    if value is True:
        return "yes"
    if isinstance(value, float):
        return f"{value:.4f}" if key.startswith("val_") else f"{value:.4g}"
    return str(value)
