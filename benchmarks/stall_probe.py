"""Time a TensorFlow step's end from its own output: the wait after the last epoch, and exit.

The step runs in a fresh process with unbuffered output; each line is stamped as it arrives.
Keras (``verbose=2``) prints one line as each epoch ends, tbpipe prints ``model written to``
once the model is saved, and the process then exits:

- **after-last-epoch wait**: from the last epoch's line to ``model written to`` (the training
  iterator's teardown, the events' sync and the save),
- **exit**: from ``model written to`` to the end of the process.

    python -m benchmarks.stall_probe --runs 20 --epochs 1     # generates 54,000 + 6,000 images
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

EPOCH_LINE = re.compile(r"^\s*\d+/\d+ - .*(loss|accuracy)")
SAVED_LINE = "model written to"
FIRST_OUTPUT = "training on"
STALL_S = 2.0  # the goal: no wait over this after the last epoch


def stamped_lines(command: Sequence[str], env: dict[str, str] | None = None
                  ) -> tuple[list[tuple[float, str]], float, int]:
    """Run ``command``; each output line with its arrival time, the end time, the exit code.

    Times are seconds from the start of the process.
    """
    started = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}) as proc:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
        code = proc.wait()
    return lines, time.perf_counter() - started, code


def step_end_times(lines: list[tuple[float, str]], ended: float) -> dict[str, float]:
    """The after-last-epoch wait and the exit time of one step's stamped output.

    Raises:
        ValueError: the output has no epoch line or no ``model written to`` line.

    """
    epochs = [t for t, text in lines if EPOCH_LINE.search(text)]
    saved = [t for t, text in lines if SAVED_LINE in text]
    if not epochs or not saved:
        tail = "\n".join(text for _, text in lines[-15:])
        raise ValueError(f"no epoch or 'model written to' line in the step's output:\n{tail}")
    begun = [t for t, text in lines if FIRST_OUTPUT in text]
    return {"to_fit_s": begun[0] if begun else 0.0, "last_epoch_s": epochs[-1],
            "wait_s": saved[-1] - epochs[-1], "exit_s": ended - saved[-1], "total_s": ended}


TRAIN_SCRIPT = """
import sys
from tbpipe.components.training.config import TrainConfig
from tbpipe.components.training.core import train_model
train, val, out, epochs, batch, model = sys.argv[1:7]
train_model(train, val, out + "/model", out + "/logs",
            TrainConfig(epochs=int(epochs), batch_size=int(batch), model_spec=model))
"""


LIGHT_MODEL = """
import keras

def build(input_shape, num_classes):
    return keras.Sequential([keras.Input(shape=input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")])
"""


def probe_train(train_uri: str, val_uri: str, runs: int, epochs: int, batch_size: int,
                model_spec: str = "builtin:cnn") -> list[dict[str, float]]:
    """Run the train step's logic ``runs`` times in fresh processes; each run's end times."""
    results = []
    for index in range(runs):
        with tempfile.TemporaryDirectory(prefix="tbpipe-stall-") as out:
            lines, ended, code = stamped_lines(
                [sys.executable, "-c", TRAIN_SCRIPT, train_uri, val_uri, out, str(epochs),
                 str(batch_size), model_spec])
        if code:
            raise RuntimeError("\n".join(text for _, text in lines[-20:]))
        times = step_end_times(lines, ended)
        results.append(times)
        print(f"run {index + 1}/{runs}: " + ", ".join(f"{k} {v:.2f}" for k, v in times.items()),
              file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Generate the data set (unless given), probe, print the distribution as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stall_probe",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--examples", type=int, default=60_000)
    parser.add_argument("--data", help="a folder holding train/ and val/ Dataset folders")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--light-model", action="store_true",
                        help="a one-layer model instead of the CNN: the same data pipeline "
                             "and fit loop in a fraction of the time (a loaded machine)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tbpipe-stall-data-") as tmp:
        root = args.data
        if not root:
            from benchmarks.common import mnist_like, write_records

            images, labels = mnist_like(args.examples, seed=1)
            cut = args.examples * 9 // 10
            write_records(os.path.join(tmp, "train"), images[:cut], labels[:cut])
            write_records(os.path.join(tmp, "val"), images[cut:], labels[cut:])
            root = tmp
        model = "builtin:cnn"
        if args.light_model:
            model = os.path.join(tmp, "light_model.py") + ":build"
            with open(model.rsplit(":", 1)[0], "w", encoding="utf-8") as out:
                out.write(LIGHT_MODEL)
        runs = probe_train(os.path.join(root, "train"), os.path.join(root, "val"), args.runs,
                           args.epochs, args.batch_size, model)
    waits = sorted(r["wait_s"] for r in runs)
    report = {"model": "light" if args.light_model else "builtin:cnn", "epochs": args.epochs,
              "runs": runs, "waits_sorted": waits, "max_wait_s": waits[-1],
              "stalls_over_2s": sum(w > STALL_S for w in waits),
              "exit_s": sorted(r["exit_s"] for r in runs)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
