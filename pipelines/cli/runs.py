"""``tbpipe runs``: the runs under a log root, newest first, from their ``_summary.json``.

``tbpipe runs archive`` moves old runs out of the served log root (``pipelines/run_archive.py``).
"""

from __future__ import annotations

import argparse
import json
import time

from tbpipe.components.common.run_summary import list_runs
from tbpipe.pipelines.run_archive import ArchiveSelection, archive_root_for, archive_runs
from tbpipe.pipelines.runners.local import DEFAULT_LOG_ROOT

OUTPUTS = ("table", "json")
COLUMNS = ("experiment", "run", "started", "steps", "test accuracy", "fine-tuned", "promoted",
           "trials", "TensorBoard")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``runs``."""
    cmd = subparsers.add_parser("runs", help="list the runs under a log root, newest first")
    cmd.add_argument("--log-root", default=DEFAULT_LOG_ROOT,
                     help="local folder or store URI: gs://, s3://, az://bucket/prefix (any "
                          "scheme fsspec knows; default: %(default)s)")
    cmd.add_argument("--output", choices=OUTPUTS, default=OUTPUTS[0],
                     help="table (default) or json: one JSON object on stdout, nothing else")
    cmd.set_defaults(handler=show_runs)
    sub = cmd.add_subparsers(title="sub-commands", metavar="{archive}")
    archive = sub.add_parser(
        "archive", help="move old runs out of the served log root, keeping them",
        description="Move finished runs from the log root to an archive root beside it "
                    "(default LOG_ROOT-archive), out of the shared TensorBoard's view. Serve "
                    "the archive with tbpipe tensorboard --log-root LOG_ROOT-archive; bring a "
                    "run back with the roots swapped: --log-root LOG_ROOT-archive --to LOG_ROOT "
                    "--run EXPERIMENT/RUN. Every criterion given must hold.")
    # SUPPRESS: given before `archive` (tbpipe runs --log-root X archive) the value stays.
    archive.add_argument("--log-root", default=argparse.SUPPRESS,
                         help=f"the served log root (default: {DEFAULT_LOG_ROOT})")
    archive.add_argument("--to", default="", metavar="ARCHIVE_ROOT",
                         help="where the runs go (default: the log root + '-archive')")
    archive.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                         help="runs started more than DAYS days ago")
    archive.add_argument("--keep-latest", type=int, default=None, metavar="N",
                         help="all but the N newest runs of each experiment")
    archive.add_argument("--run", action="append", default=[], metavar="EXPERIMENT/RUN",
                         help="this run (repeatable); the only way to archive an unfinished one")
    archive.add_argument("--dry-run", action="store_true", help="only list what would move")
    archive.add_argument("--output", choices=OUTPUTS, default=argparse.SUPPRESS,
                         help="table (default) or json: one JSON object on stdout")
    archive.set_defaults(handler=archive_old_runs)


def show_runs(args: argparse.Namespace) -> int:
    """Print the runs as a table or as one JSON object ``{"log_root": ..., "runs": [...]}``."""
    runs = list_runs(args.log_root)
    if args.output == "json":
        print(json.dumps({"log_root": args.log_root, "runs": runs}, sort_keys=True))
        return 0
    if not runs:
        print(f"no runs under {args.log_root}")
        return 0
    print(format_table([table_row(run) for run in runs]))
    return 0


def archive_old_runs(args: argparse.Namespace) -> int:
    """``tbpipe runs archive``: move the chosen runs, one line each (or one JSON object)."""
    selection = ArchiveSelection(args.older_than, args.keep_latest, tuple(args.run))
    target = args.to or archive_root_for(args.log_root)
    moved = archive_runs(args.log_root, selection, target, dry_run=args.dry_run)
    if args.output == "json":
        print(json.dumps({"log_root": args.log_root, "archive_root": target,
                          "dry_run": args.dry_run, "archived": [
                              {"experiment": m.experiment, "run": m.run, "files": m.files}
                              for m in moved]}, sort_keys=True))
        return 0
    verb = "would move" if args.dry_run else "moved"
    for m in moved:
        print(f"{verb} {m.experiment}/{m.run} ({m.files} files) -> {target}")
    print(f"{len(moved)} run(s) {verb} out of {args.log_root}"
          + ("" if args.dry_run or not moved else
             f"; serve them with: tbpipe tensorboard --log-root {target}"))
    return 0


def table_row(run: dict) -> tuple[str, ...]:
    """One run as the table's cells (COLUMNS); ``-`` where it does not say."""
    started = run.get("started")
    accuracy = run.get("test_accuracy")
    promotion = run.get("promotion")
    if run.get("status") == "unfinished":
        promoted = "unfinished"
    elif run.get("status", "finished") != "finished":  # what is wrong with its summary
        promoted = run["status"]
    elif promotion:
        promoted = "yes" if promotion.get("promoted") else "no (kept baseline)"
    else:
        promoted = "-"
    return (
        run.get("experiment", "-"), run.get("run", "-"),
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)) if started else "-",
        str(len(run.get("steps") or ())),
        f"{accuracy:.4f}" if isinstance(accuracy, int | float) else "-",
        {True: "yes", False: "no"}.get(run.get("finetuned"), "-"),
        promoted, trials_cell(run.get("trials")), run.get("tensorboard_url") or "-",
    )


def trials_cell(trials: dict | None) -> str:
    """A sweep's or search's trials: ``12`` or ``12 (4 pruned, 1 failed)``; ``-`` for none."""
    if not trials:
        return "-"
    others = ", ".join(f"{n} {state}" for state, n in sorted(trials.items())
                       if state != "complete" and n)
    total = sum(trials.values())
    return f"{total} ({others})" if others else str(total)


def format_table(rows: list[tuple[str, ...]]) -> str:
    """COLUMNS and ``rows`` as left-aligned text columns (started is UTC)."""
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=True)]
    lines = [COLUMNS, *rows]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)
