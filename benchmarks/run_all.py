"""Run the seven benchmarks, each in a fresh process, and print their tables and a summary.

    python -m benchmarks [--full] [--only train,logging] [--out results.md]

About 10 minutes on a 2-core machine with the default sizes; ``--full`` adds the issue's
sizes (1M-row preprocess tables, a 50 runs x 4 steps x 10,000 points TensorBoard root;
about 25 minutes more). Each benchmark also runs alone: ``python -m benchmarks.bench_train``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import load_average, machine_info, quiet_env

BENCHMARKS = {
    "train": ("bench_train", []),
    "logging": ("bench_logging", []),
    "preprocess": ("bench_preprocess", ["--full"]),
    "pipeline": ("bench_pipeline", []),
    "tensorboard": ("bench_tensorboard", ["--full"]),
    "images": ("bench_images", ["--full"]),
    "discovery": ("bench_discovery", ["--full"]),
    "vs_keras": ("bench_vs_keras", ["--examples", "60000", "--pairs", "3"]),
}


def summary_rows(reports: dict[str, dict]) -> list[list[str]]:
    """One line per benchmark (each formats its own: ``Report.summary``)."""
    return [report["summary"] for report in reports.values() if report.get("summary")]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print each report, then the summary."""
    from tbpipe.components.common.tensorboard.writer import markdown_table

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also the issue's big sizes")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--out", help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(BENCHMARKS)
    machine = machine_info()
    parts = ["## tbpipe benchmarks", "Machine: " + ", ".join(f"{k} {v}" for k, v in
                                                          machine.items())]
    print(parts[0] + "\n\n" + parts[1] + "\n", flush=True)
    reports, started = {}, time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-") as tmp:
        for name in chosen:
            module, full_flags = BENCHMARKS[name]
            out = os.path.join(tmp, f"{name}.json")
            command = [sys.executable, "-m", f"benchmarks.{module}", "--json", out,
                       *(full_flags if args.full else [])]
            print(f"running {' '.join(command[1:4])} (load {load_average()})", file=sys.stderr,
                  flush=True)
            reply = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=quiet_env())
            print(reply.stdout, flush=True)
            parts.append(reply.stdout)
            if reply.returncode == 0:
                reports[name] = json.loads(Path(out).read_text())
            else:
                print(f"{module} failed with exit status {reply.returncode}", flush=True)
    summary = markdown_table(["benchmark", "figure", "goal"], summary_rows(reports))
    total = f"_all: {time.perf_counter() - started:.0f} s_"
    print("### Summary\n\n" + summary + "\n\n" + total, flush=True)
    if args.out:
        Path(args.out).write_text("\n\n".join([*parts, "### Summary", summary, total]) + "\n")
    return 0 if len(reports) == len(chosen) else 1
