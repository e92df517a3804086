"""Benchmark 4: what ``tbpipe run`` (kfp.local) costs over calling the steps' logic directly.

    python -m benchmarks.bench_pipeline [--epochs 2] [--data builtin:digits]

Runs ``tbpipe run --finetune always`` (seven tasks, each a fresh ``python -m
kfp.dsl.executor_main`` process) and times every task from the lines kfp.local prints as they
arrive: *launch* (task start to the executor's first line: interpreter + kfp import),
*body* (the component function: its imports and the logic), *exit* (output written to task
finished: interpreter teardown and kfp reading the outputs). Then runs the same logic on the
same data and parameters in one fresh process (``preprocess_data``, ``train_model``,
``evaluate_model``, ``finetune_model``, ``evaluate_model``, ``choose_model``): the difference
per step is the fixed cost of running it as a pipeline task. Last, what the pieces of that
fixed cost are, each in a fresh interpreter: start-up, imports, teardown with TensorFlow.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
import time

from benchmarks.common import median, progress
from benchmarks.report import Report, in_fresh_process, main_for, quiet_env
from tbpipe.pipelines.kfp_compat import LOCAL_TASK_ENDED, LOCAL_TASK_STARTED

STEPS = ("preprocess", "train", "evaluate", "decide-finetune", "finetune",
         "evaluate-finetuned", "select-model")
KFP_NAMES = {"evaluate-2": "evaluate-finetuned"}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
MARKS = {"start": LOCAL_TASK_STARTED,
         "up": re.compile(r"\[KFP Executor .*Looking for component"),
         "done": re.compile(r"\[KFP Executor .*Wrote executor output"),
         "end": LOCAL_TASK_ENDED}
START_UP = {
    "python -c pass": "pass",
    "import kfp.dsl (the executor)": "import kfp.dsl",
    "import tensorboardX": "import tensorboardX",
    "import pandas": "import pandas",
    "import tensorflow": "import tensorflow",
    "import keras": "import keras",
    "import keras the fast way (no sklearn)": "import tbpipe.components.training.model",
}
TEARDOWN = ("import sys, time, tensorflow as tf; tf.constant(1); "
            "print(time.time(), flush=True)")


FLAGS = {
    "--epochs": (2, None),
    "--finetune-epochs": (1, None),
    "--data": ("builtin:digits", None),
    "--repeat": (2, "start-up measurements each"),
}


def run_pipeline(root: str, args: argparse.Namespace) -> tuple[float, dict[str, dict]]:
    """``tbpipe run``; its wall time and each task's marks (seconds since the run started)."""
    command = [sys.executable, "-m", "tbpipe.pipelines.cli", "run", "--verbose", "--finetune",
               "always",
               "--epochs", str(args.epochs), "--finetune-epochs", str(args.finetune_epochs),
               "--data", args.data, "--log-root", os.path.join(root, "logs"),
               "--pipeline-root", os.path.join(root, "kfp"), "--experiment", "bench",
               "--run-name", "piped"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    tasks: dict[str, dict] = {}
    current = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env) as process:
        for raw in process.stdout:
            now, line = time.perf_counter() - started, ANSI.sub("", raw)
            for mark, pattern in MARKS.items():
                found = pattern.search(line)
                if not found:
                    continue
                if mark == "start":  # kfp.local names a second 'evaluate' 'evaluate-2'
                    current = KFP_NAMES.get(found.group(1), found.group(1))
                tasks.setdefault(current, {}).setdefault(mark, now)
        if process.wait():
            raise RuntimeError(f"tbpipe run failed (exit {process.returncode})")
    return time.perf_counter() - started, tasks


def direct(args: argparse.Namespace) -> dict[str, float]:
    """In a fresh process (``--child ROOT``): each step's logic in turn; seconds of each."""
    started = time.perf_counter()
    from tbpipe.components.common.keras_import import import_keras

    import_keras()
    seconds: dict[str, float] = {"imports": time.perf_counter() - started}
    from tbpipe.components.evaluation.config import EvaluateConfig
    from tbpipe.components.evaluation.core import evaluate_model
    from tbpipe.components.finetuning.config import FinetuneConfig
    from tbpipe.components.finetuning.core import finetune_model
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data
    from tbpipe.components.selection.core import choose_model, finetune_plan
    from tbpipe.components.training.config import TrainConfig
    from tbpipe.components.training.core import train_model

    path = functools.partial(os.path.join, args.child)

    def timed(step: str, call):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        result = call()
        seconds[step] = time.perf_counter() - started
        return result

    evaluate = EvaluateConfig(accuracy_target=0.95, run_label="bench/direct")
    timed("preprocess", lambda: preprocess_data(
        args.data, path("train_data"), path("val_data"), path("test_data"),
        path("logs", "preprocess"), PreprocessConfig(seed=42)))
    timed("train", lambda: train_model(
        path("train_data"), path("val_data"), path("model"), path("logs", "train"),
        TrainConfig(epochs=args.epochs, checkpoint_dir=path("ckpt", "train"))))
    scored = timed("evaluate", lambda: evaluate_model(
        path("model"), path("test_data"), path("report.md"), path("logs", "evaluate"), evaluate))
    timed("decide-finetune", lambda: finetune_plan("always", scored.meets_target, ""))
    timed("finetune", lambda: finetune_model(
        path("model"), path("train_data"), path("val_data"), path("tuned"),
        path("logs", "finetune"), FinetuneConfig(epochs=args.finetune_epochs,
                                                 checkpoint_dir=path("ckpt", "finetune"))))
    rescored = timed("evaluate-finetuned", lambda: evaluate_model(
        path("tuned"), path("test_data"), path("report2.md"), path("logs", "eval2"), evaluate))
    timed("select-model", lambda: choose_model(path("model"), scored.accuracy, path("best"),
                                               path("tuned"), rescored.accuracy))
    return seconds


def run_direct(root: str, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """:func:`direct` in a fresh interpreter (its output is dropped); wall time and steps."""
    started = time.perf_counter()
    steps = in_fresh_process("bench_pipeline", [
        "--child", root, "--epochs", str(args.epochs), "--finetune-epochs",
        str(args.finetune_epochs), "--data", args.data])
    return time.perf_counter() - started, steps


def fresh_interpreter_costs(repeat: int) -> list[list[object]]:
    """Seconds of each start-up piece in a fresh interpreter (best of ``repeat``)."""
    env = quiet_env()
    rows = []
    for label, code in START_UP.items():
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env,
                           capture_output=True)
            best = min(best, time.perf_counter() - started)
        rows.append([label, f"{best:.2f}"])
    best = float("inf")
    for _ in range(repeat):
        reply = subprocess.run([sys.executable, "-c", TEARDOWN], check=True, env=env,
                               capture_output=True, text=True)
        best = min(best, time.time() - float(reply.stdout.strip().splitlines()[-1]))
    rows.append(["interpreter teardown with TensorFlow loaded", f"{best:.2f}"])
    return rows


def run(args: argparse.Namespace) -> Report:
    """Measure, and return the report."""
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-pipeline-") as root:
        progress("pipeline: tbpipe run (kfp.local, subprocess runner)")
        piped_wall, tasks = run_pipeline(os.path.join(root, "piped"), args)
        progress("pipeline: the same logic in one process")
        direct_wall, steps = run_direct(os.path.join(root, "direct"), args)
    progress("pipeline: start-up pieces, each in a fresh interpreter")
    pieces = fresh_interpreter_costs(args.repeat)
    return build_report(args, piped_wall, tasks, direct_wall, steps, pieces)


def build_report(args: argparse.Namespace, piped_wall: float, tasks: dict, direct_wall: float,
                 steps: dict, pieces: list) -> Report:
    """The tables, headline figures and notes."""
    rows, fixed = task_rows(tasks, steps)
    report = Report("bench_pipeline", "4. Pipeline overhead: tbpipe run vs the logic in one "
                    "process", ["step", "launch s", "body s", "exit s", "task s",
                                "logic direct s", "fixed cost s"], rows)
    report.add_table("Wall time", ["", "seconds"],
                     wall_rows(piped_wall, tasks, direct_wall, steps))
    report.add_table("Start-up pieces (fresh interpreter, best of "
                     f"{args.repeat})", ["piece", "seconds"], pieces)
    report.headline = {"tbpipe_run_s": round(piped_wall, 1), "direct_s": round(direct_wall, 1),
                       "ratio": round(piped_wall / direct_wall, 2),
                       "fixed_cost_per_step_s": round(median(fixed), 2),
                       "fixed_cost_total_s": round(sum(fixed), 1)}
    report.notes.append(f"{args.data}, --epochs {args.epochs}, --finetune always, "
                        f"--finetune-epochs {args.finetune_epochs}, checkpoints on (as the "
                        "components do). Task times come from kfp.local's own lines as they "
                        "arrive.")
    return report


def in_tasks(tasks: dict) -> float:
    """Seconds from start to finish of every task, added up."""
    return sum(tasks[s]["end"] - tasks[s]["start"] for s in STEPS if "end" in tasks.get(s, {}))


def task_rows(tasks: dict, steps: dict) -> tuple[list[list[object]], list[float]]:
    """The main table (each task's launch, body and exit), and each task's fixed cost."""
    rows, fixed = [], []
    for step in STEPS:
        marks = tasks.get(step, {})
        if not {"start", "up", "done", "end"} <= set(marks):
            continue
        total = marks["end"] - marks["start"]
        cost = total - steps.get(step, 0.0)
        fixed.append(cost)
        rows.append([step, f"{marks['up'] - marks['start']:.2f}",
                     f"{marks['done'] - marks['up']:.2f}", f"{marks['end'] - marks['done']:.2f}",
                     f"{total:.2f}", f"{steps.get(step, 0.0):.2f}", f"{cost:.2f}"])
    rows.append(["all tasks", "", "", "", f"{in_tasks(tasks):.1f}",
                 f"{sum(v for k, v in steps.items() if k != 'imports'):.1f}",
                 f"{sum(fixed):.1f}"])
    return rows, fixed


def wall_rows(piped_wall: float, tasks: dict, direct_wall: float,
              steps: dict) -> list[list[str]]:
    """Where ``tbpipe run``'s wall time went, against the same logic in one process."""
    first = min(m["start"] for m in tasks.values() if "start" in m)
    last = max(m["end"] for m in tasks.values() if "end" in m)
    return [
        ["tbpipe run (whole command)", f"{piped_wall:.1f}"],
        ["  before the first task (CLI start, compile, kfp.local init)", f"{first:.1f}"],
        ["  between tasks (kfp.local orchestration)", f"{last - first - in_tasks(tasks):.1f}"],
        ["  after the last task", f"{piped_wall - last:.1f}"],
        ["the same logic in one fresh process", f"{direct_wall:.1f}"],
        ["  of which imports (TensorFlow, Keras)", f"{steps['imports']:.1f}"],
        ["ratio tbpipe run / direct", f"{piped_wall / direct_wall:.2f}"]]


def summary(q: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    return ["4 pipeline overhead", f"tbpipe run {q['tbpipe_run_s']} s vs direct "
            f"{q['direct_s']} s (x{q['ratio']}); fixed cost {q['fixed_cost_total_s']} s, "
            f"median {q['fixed_cost_per_step_s']} s per task", "report, cut"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_pipeline", __doc__, FLAGS, run, direct, summary=summary))
