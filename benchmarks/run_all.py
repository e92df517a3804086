"""Run the five benchmarks, each in a fresh process, and print their tables and a summary.

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
}


def summary_rows(reports: dict[str, dict]) -> list[list[str]]:
    """One line per benchmark: the headline figure and the goal it is held against."""
    rows = []
    h = {name: report.get("headline", {}) for name, report in reports.items()}
    if "train" in h:
        t = h["train"]
        rows.append(["1 train throughput", f"step / bare model.fit = {t['step_vs_bare_wall']} "
                     f"(wall), {t['step_vs_bare_cpu']} (CPU); {t['step_gflops']} GFLOP/s = "
                     f"{t['fraction_of_fp32_peak']:.0%} of the fp32 peak, "
                     f"{t['fraction_of_peak']:.0%} of {t['peak_gflops']} in the arms' precision",
                     ">= 1.0; half of peak"])
    if "logging" in h:
        g = h["logging"]
        rows.append(["2 logging overhead", f"{g['step_logging_overhead_wall']:+.1%} wall, "
                     f"{g['step_logging_overhead_cpu']:+.1%} CPU; hooks "
                     f"{g['tbpipe_hooks_fraction']:.2%} of an epoch, hooks + writer thread "
                     f"{g['tbpipe_logging_work_fraction']:.2%} (Keras' callback hooks "
                     f"{g['keras_hooks_fraction']:.1%}); {g['tbpipe_us_per_batch']} us/batch "
                     f"(was {g['before_us_per_batch']}); toggled within one fit "
                     f"{g.get('toggle_overhead_cpu', float('nan')):+.1%} CPU", "<= 1% slower"])
    if "preprocess" in h:
        p = h["preprocess"]
        rows.append(["3 preprocess scaling", "; ".join(
            f"{kind}: {p[f'{kind}_rows_per_s']:,} rows/s, time ~ rows^"
            f"{p[f'{kind}_time_exponent']}, peak memory x{p[f'{kind}_memory_growth']} "
            "between the two largest tables"
            for kind in ("csv", "parquet") if f"{kind}_rows_per_s" in p), "flat memory"])
    if "pipeline" in h:
        q = h["pipeline"]
        rows.append(["4 pipeline overhead", f"tbpipe run {q['tbpipe_run_s']} s vs direct "
                     f"{q['direct_s']} s (x{q['ratio']}); fixed cost {q['fixed_cost_total_s']} s, "
                     f"median {q['fixed_cost_per_step_s']} s per task", "report, cut"])
    if "tensorboard" in h:
        b = h["tensorboard"]
        rows.append(["5 TensorBoard at scale", ", ".join(
            f"{k} {v} s" for k, v in b.items() if k != "python_over_fast"),
            "fast loader where it can read"])
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print each report, then the summary."""
    from components.common.tblog import markdown_table

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
