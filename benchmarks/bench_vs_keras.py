"""Benchmark 4: ``tbpipe run`` against the one-process Keras script a user would write instead.

    python -m benchmarks.bench_vs_keras [--pairs 2] [--examples 12000] [--epochs 3]
    python -m benchmarks.bench_vs_keras --examples 60000 --pairs 3     # the issue's size

Generates an MNIST-like set as a folder of IDX files (``--examples`` training images, 28x28,
plus a sixth as many ``t10k`` test images; not the built-in digits), then runs, in pairs in
alternating order (A B, B A, ...):

- **tbpipe**: ``tbpipe run --data IDX --epochs E --batch-size 128 --finetune never`` (the
  preprocess step holds out 10 % for validation, the ``t10k`` files are the test set), as a
  user runs it from a shell;
- **script**: the script a user writes instead (``SCRIPT``): read the IDX files with numpy,
  the same CNN as ``builtin:cnn``, float32, ``model.fit(x, y, batch_size=128, epochs=E,
  validation_split=0.1)``, ``model.evaluate`` on the test files, ``model.save``.

A second comparison runs the same script in the precision the pipeline chose (``--precision
auto``: bfloat16 on AMX; float32 elsewhere, where it is the first comparison again and is
not run twice). Every line of both sides is stamped as it arrives: the breakdown (imports,
first batch, epochs, the wait after the last epoch, exit, each TensorFlow step's fixed cost)
and the stalls (any wait over 2 s after an epoch or before an epoch's first batch) come from
those stamps. Figures are medians of the pairs and the ratio's 90 % bootstrap interval.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from benchmarks.common import median, median_ratio_interval, mnist_like, progress
from benchmarks.report import Report, main_for, quiet_env
from tbpipe.pipelines.kfp_compat import LOCAL_TASK_ENDED, LOCAL_TASK_STARTED

STALL_S = 2.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TF_STEPS = ("train", "evaluate")

FLAGS = {
    "--pairs": (2, "paired runs (each: tbpipe run and the script, alternating order)"),
    "--examples": (12_000, "training images in the generated IDX set (the issue: 60000)"),
    "--epochs": (3, None),
    "--batch-size": (128, None),
    "--fixed-cost-pairs": (2, "paired digits runs with and without the warm worker"),
}

# One local run (builtin:digits, 1 epoch) in-process, with or without the warm worker.
LOCAL_RUN = r'''
import sys
from tbpipe.pipelines.runners.local import run_pipeline
from tbpipe.pipelines.training import PipelineParams
root, warm = sys.argv[1], sys.argv[2] == "warm"
run_pipeline(PipelineParams(epochs=1, finetune="never", log_root=root + "/logs"),
             pipeline_root=root + "/kfp", warm_worker=warm)
'''

# The script as a user writes it; the marks (``@mark name time``) are the only additions.
SCRIPT = r'''
import sys, time
T0 = time.time()
def mark(name):
    print(f"@mark {name} {time.time() - T0:.3f}", flush=True)
import numpy as np
import keras
mark("imported")
folder, epochs, batch_size, precision, out = sys.argv[1:6]
if precision != "float32":
    keras.mixed_precision.set_global_policy(precision)

def read_idx(path):
    data = open(path, "rb").read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)

x = read_idx(f"{folder}/train-images-idx3-ubyte")[..., None].astype("float32") / 255.0
y = read_idx(f"{folder}/train-labels-idx1-ubyte").astype("int32")
x_test = read_idx(f"{folder}/t10k-images-idx3-ubyte")[..., None].astype("float32") / 255.0
y_test = read_idx(f"{folder}/t10k-labels-idx1-ubyte").astype("int32")
model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    keras.layers.Conv2D(32, 3, activation="relu"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Conv2D(64, 3, activation="relu"),
    keras.layers.MaxPooling2D(2),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dense(10, activation="softmax", dtype="float32"),
])
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])

class Marks(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        mark(f"epoch_begin {epoch}"); self.epoch = epoch; self.first = True
    def on_train_batch_end(self, batch, logs=None):
        if self.first:
            mark(f"first_batch {self.epoch}"); self.first = False
    def on_epoch_end(self, epoch, logs=None):
        mark(f"epoch_end {epoch}")

mark("data_ready")
model.fit(x, y, batch_size=int(batch_size), epochs=int(epochs), validation_split=0.1,
          verbose=2, callbacks=[Marks()])
mark("fit_returned")
loss, accuracy = model.evaluate(x_test, y_test, batch_size=int(batch_size), verbose=0)
model.save(out)
print(f"test accuracy {accuracy:.4f}", flush=True)
mark("done")
'''


def write_idx_folder(folder: str, examples: int, seed: int = 3) -> None:
    """An MNIST-like IDX folder: ``train-*`` with ``examples`` images, ``t10k-*`` a sixth."""
    os.makedirs(folder, exist_ok=True)
    test = max(1, examples // 6)
    images, labels = mnist_like(examples + test, seed=seed)
    for prefix, part in (("train", slice(0, examples)), ("t10k", slice(examples, None))):
        pixels, classes = images[part], labels[part].astype(np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big")
                                                for n in pixels.shape)
        with open(os.path.join(folder, f"{prefix}-images-idx3-ubyte"), "wb") as out:
            out.write(header + pixels.tobytes())
        header = bytes([0, 0, 8, 1]) + len(classes).to_bytes(4, "big")
        with open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte"), "wb") as out:
            out.write(header + classes.tobytes())


def stamped(command: Sequence[str], env: dict[str, str]) -> tuple[list[tuple[float, str]],
                                                                  float]:
    """Run ``command``; its output lines with arrival times, and its wall time."""
    import time

    started = time.perf_counter()
    lines = []
    with subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1, env=env) as proc:
        for line in iter(proc.stdout.readline, ""):
            lines.append((time.perf_counter() - started, ANSI.sub("", line.rstrip("\n"))))
        code = proc.wait()
    wall = time.perf_counter() - started
    if code:
        tail = "\n".join(text for _, text in lines[-30:])
        raise RuntimeError(f"{command[:4]} failed ({code}):\n{tail}")
    return lines, wall


def run_script(folder: str, args: argparse.Namespace, precision: str, out: str) -> dict:
    """The Keras script once: wall time, breakdown and stalls from its marks."""
    lines, wall = stamped([sys.executable, "-c", SCRIPT, folder, str(args.epochs),
                           str(args.batch_size), precision, out], quiet_env())
    marks: dict[str, float] = {}
    for _, text in lines:
        if text.startswith("@mark "):
            _, name, *rest = text.split()
            marks[" ".join([name, *rest[:-1]])] = float(rest[-1])
    last = args.epochs - 1
    epoch_starts = [marks[f"first_batch {e}"] - marks[f"epoch_begin {e}"]
                    for e in range(args.epochs) if f"first_batch {e}" in marks]
    gaps = [marks[f"epoch_begin {e + 1}"] - marks[f"epoch_end {e}"] for e in range(last)]
    wait = marks["fit_returned"] - marks[f"epoch_end {last}"]
    stalls = [round(s, 1) for s in [*epoch_starts[1:], *gaps, wait] if s > STALL_S]
    accuracy = re.search(r"test accuracy ([0-9.]*[0-9])", "\n".join(t for _, t in lines))
    return {"wall": wall, "import": marks["imported"],
            "first_batch": epoch_starts[0] if epoch_starts else 0.0,
            "epochs": marks[f"epoch_end {last}"] - marks["epoch_begin 0"],
            "wait": wait, "exit": wall - marks["done"], "stalls": stalls,
            "accuracy": float(accuracy.group(1)) if accuracy else 0.0}


TASK_START, TASK_END = LOCAL_TASK_STARTED, LOCAL_TASK_ENDED
EXECUTOR_UP = re.compile(r"\[KFP Executor .*Looking for component")
EXECUTOR_DONE = re.compile(r"\[KFP Executor .*Wrote executor output")
EPOCH_LINE = re.compile(r"^\s*\d+/\d+ - .*(loss|accuracy)")


def run_tbpipe(folder: str, root: str, args: argparse.Namespace) -> dict:
    """``tbpipe run`` once: wall time, the train step's breakdown, each TF step's fixed cost."""
    command = [sys.executable, "-m", "tbpipe.pipelines.cli", "run", "--data", folder,
               "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--finetune", "never", "--log-root", os.path.join(root, "logs"),
               "--pipeline-root", os.path.join(root, "kfp")]
    if "--verbose" in subprocess.run([*command[:4], "--help"], capture_output=True,
                                     text=True).stdout:
        command.append("--verbose")  # every step's own lines, which the stamps come from
    lines, wall = stamped(command, {**os.environ, "PYTHONUNBUFFERED": "1"})
    tasks = task_times(lines)
    train = tasks["train"]
    fixed = {step: (tasks[step]["up"] - tasks[step]["start"])
             + (tasks[step]["end"] - tasks[step]["done"]) for step in TF_STEPS if step in tasks}
    epochs = train["epochs"]
    accuracy = re.search(r"test accuracy ([0-9.]*[0-9])", "\n".join(t for _, t in lines))
    return {"wall": wall, "import": train["up"] - train["start"],
            "epochs": epochs[-1] - train["fit_start"], "wait": train["saved"] - epochs[-1],
            "exit": train["end"] - train["done"], "fixed": fixed,
            "before_train": train["start"], "precision": train.get("precision", "float32"),
            "stalls": [round(train["saved"] - epochs[-1], 1)]
            if train["saved"] - epochs[-1] > STALL_S else [],
            "accuracy": float(accuracy.group(1)) if accuracy else 0.0}


def task_times(lines: list[tuple[float, str]]) -> dict[str, dict]:
    """Each task's marks from kfp.local's stamped lines (start, executor up and done, end;
    a training task's fit start, epochs, model saved and precision too)."""
    tasks: dict[str, dict] = {}
    current = None
    for stamp, text in lines:
        if found := TASK_START.search(text):
            current = found.group(1)
            tasks[current] = {"start": stamp, "epochs": []}
        elif found := TASK_END.search(text):
            tasks[found.group(1)]["end"] = stamp
        elif current and EXECUTOR_UP.search(text):
            tasks[current].setdefault("up", stamp)
        elif current and EXECUTOR_DONE.search(text):
            tasks[current]["done"] = stamp
        elif current and EPOCH_LINE.search(text):
            tasks[current]["epochs"].append(stamp)
        elif current and "model written to" in text:
            tasks[current]["saved"] = stamp
        elif current and text.strip().startswith("training on"):
            tasks[current]["fit_start"] = stamp
            tasks[current]["precision"] = text.split(" in ")[-1].split(",")[0].strip()
    return tasks


def fixed_cost_pairs(pairs: int, tmp: str) -> dict[str, list[dict[str, float]]]:
    """The evaluate task (the extra TensorFlow step) with and without the warm worker.

    Each arm is one local run of builtin:digits (1 epoch) in a fresh process, alternating.
    Returns per arm: the evaluate task's time (start to end) and the whole run's wall time.
    """
    arms: dict[str, list[dict[str, float]]] = {"warm": [], "plain": []}
    for index in range(pairs):
        for arm in ("warm", "plain") if index % 2 == 0 else ("plain", "warm"):
            progress(f"fixed cost pair {index + 1}/{pairs}: {arm}")
            lines, wall = stamped([sys.executable, "-c", LOCAL_RUN,
                                   os.path.join(tmp, f"fixed-{arm}-{index}"), arm],
                                  {**os.environ, "PYTHONUNBUFFERED": "1"})
            tasks = task_times(lines)
            arms[arm].append({"evaluate": tasks["evaluate"]["end"] - tasks["evaluate"]["start"],
                              "train": tasks["train"]["end"] - tasks["train"]["start"],
                              "wall": wall})
    return arms


def run(args: argparse.Namespace) -> Report:
    """Generate the set, run the pairs, report."""
    with tempfile.TemporaryDirectory(prefix="tbpipe-vs-keras-") as tmp:
        folder = os.path.join(tmp, "idx")
        write_idx_folder(folder, args.examples)
        piped, script, same = [], [], []
        precision = None
        for index in range(args.pairs):
            order = ("tbpipe", "script") if index % 2 == 0 else ("script", "tbpipe")
            for arm in order:
                progress(f"pair {index + 1}/{args.pairs}: {arm}")
                if arm == "tbpipe":
                    piped.append(run_tbpipe(folder, os.path.join(tmp, f"run{index}"), args))
                    precision = piped[-1]["precision"]
                else:
                    script.append(run_script(folder, args, "float32",
                                             os.path.join(tmp, f"s{index}.keras")))
            if precision and precision != "float32":
                progress(f"pair {index + 1}/{args.pairs}: script in {precision}")
                same.append(run_script(folder, args, precision,
                                       os.path.join(tmp, f"p{index}.keras")))
        fixed = fixed_cost_pairs(args.fixed_cost_pairs, tmp)
    result = report(args, piped, script, same, precision or "float32")
    if fixed["warm"]:
        rows = [[arm, len(runs), *(f"{median([r[k] for r in runs]):.2f}"
                                   for k in ("evaluate", "train", "wall"))]
                for arm, runs in fixed.items()]
        result.add_table("Fixed cost: builtin:digits, 1 epoch, with and without the warm "
                         "worker (paired, alternating)",
                         ["arm", "runs", "evaluate task s", "train task s", "run wall s"], rows)
        saved = median([r["evaluate"] for r in fixed["plain"]]) - median(
            [r["evaluate"] for r in fixed["warm"]])
        result.headline["evaluate_task_warm_s"] = round(
            median([r["evaluate"] for r in fixed["warm"]]), 2)
        result.headline["evaluate_task_plain_s"] = round(
            median([r["evaluate"] for r in fixed["plain"]]), 2)
        result.headline["saved_per_tf_step_s"] = round(saved, 2)
    return result


def _row(name: str, runs: list[dict]) -> list[object]:
    keys = ("wall", "import", "first_batch", "epochs", "wait", "exit")
    return [name, len(runs),
            *(f"{median([r[k] for r in runs]):.2f}" if k in runs[0] else "-" for k in keys),
            ", ".join(str(s) for r in runs for s in r["stalls"]) or "none",
            f"{median([r['accuracy'] for r in runs]):.4f}"]


def report(args: argparse.Namespace, piped: list[dict], script: list[dict], same: list[dict],
           precision: str) -> Report:
    """The tables, headline figures and notes."""
    rows = [_row("tbpipe run (train step)", piped), _row("Keras script, float32", script)]
    if same:
        rows.append(_row(f"Keras script, {precision}", same))
    result = Report("bench_vs_keras", "4. tbpipe run vs a hand-written Keras script",
                    ["arm", "runs", "wall s", "import s", "first batch s", "epochs s",
                     "wait after last epoch s", "exit s", "stalls > 2 s", "test accuracy"],
                    rows)
    walls = [r["wall"] for r in piped]
    ratio = median(walls) / median([r["wall"] for r in script])
    low, high = median_ratio_interval(walls, [r["wall"] for r in script])
    same_ratio, same_low, same_high = ratio, low, high
    if same:
        same_ratio = median(walls) / median([r["wall"] for r in same])
        same_low, same_high = median_ratio_interval(walls, [r["wall"] for r in same])
    fixed = [value for r in piped for step, value in r["fixed"].items() if step != "train"]
    train_fixed = [r["fixed"]["train"] for r in piped]
    result.add_table("tbpipe run: fixed cost per TensorFlow step (launch + exit, warm worker)",
                     ["step", "median s", "max s"],
                     [["train", f"{median(train_fixed):.2f}", f"{max(train_fixed):.2f}"],
                      ["evaluate (the extra TF step)", f"{median(fixed):.2f}",
                       f"{max(fixed, default=0):.2f}"],
                      ["before the train step (CLI, compile, preprocess)",
                       f"{median([r['before_train'] for r in piped]):.2f}", ""]])
    result.headline = {
        "ratio_vs_float32": round(ratio, 3), "interval": [round(low, 3), round(high, 3)],
        "ratio_vs_same_precision": round(same_ratio, 3),
        "same_interval": [round(same_low, 3), round(same_high, 3)],
        "precision": precision, "fixed_cost_extra_step_s": round(median(fixed), 2),
        "pipeline_stalls": sum(len(r["stalls"]) for r in piped),
        "script_stalls": sum(len(r["stalls"]) for r in script + same),
        "pairs": len(piped), "walls_tbpipe": [round(w, 1) for w in walls],
        "walls_script": [round(r["wall"], 1) for r in script]}
    result.notes.append(
        f"{args.examples:,} generated 28x28 images (IDX), --epochs {args.epochs}, batch "
        f"{args.batch_size}, {len(piped)} pairs in alternating order. tbpipe run: the whole "
        "command (preprocess, train, evaluate, select); the script: read, fit, evaluate, "
        "save. Ratio tbpipe/script (median wall) "
        f"{ratio:.3f} (90 % interval {low:.3f}-{high:.3f}) against float32; "
        + (f"{same_ratio:.3f} ({same_low:.3f}-{same_high:.3f}) against the script in "
           f"{precision}." if same else
           f"the pipeline chose {precision} here, so the same-precision script is the "
           "float32 one."))
    result.notes.append("tbpipe: 'import' is the train task's launch (task start to the KFP "
                        "executor's first line), 'epochs' from the step's 'training on' line to "
                        "its last epoch line, 'wait' from there to 'model written to' (the "
                        "iterator's teardown, the events' sync and the save), 'exit' from the "
                        "executor's last line to the task's end. The script: its own marks.")
    return result


def summary(q: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    return ["4 tbpipe run vs Keras script",
            f"x{q['ratio_vs_float32']} vs float32 script, x{q['ratio_vs_same_precision']} vs "
            f"{q['precision']} script; {q['fixed_cost_extra_step_s']} s per extra TF step; "
            f"stalls {q['pipeline_stalls']} (tbpipe) / {q['script_stalls']} (script)",
            "<= 1.0, <= 1.10, <= 2 s"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_vs_keras", __doc__, FLAGS, run, summary=summary))
