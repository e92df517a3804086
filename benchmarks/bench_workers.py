"""Local multi-worker training: 1, 2 (and 4) worker processes on the same global batch.

    python -m benchmarks.bench_workers [--examples 12000] [--epochs 2] [--workers 1,2]

Each arm is the train step's logic (``run_fit_step``) in a fresh process: 1 worker trains in
that process (the default path), N > 1 start N worker processes over loopback gRPC
(MultiWorkerMirroredStrategy). Every arm has the same global batch (``--global-batch``; the
per-worker batch is global / N), data, seed and epochs. Arms run in A B ... B A order
(``--rounds`` times), so the machine's drift hits all alike; figures are medians and ratios
to the 1-worker arm.

- **samples/s**: training batches only (validation and start-up excluded), from the chief's
  progress lines, stamped as they arrive: from the first batch event of the last epoch to
  its last one (the first epoch also traces the step function).
- **all-reduce ms/step**: N worker processes all-reduce one float32 tensor the size of the
  model's gradients (what each training step all-reduces), median of ``--allreduce-reps``.
- **val_accuracy**: the last epoch's, from the same lines.

On a machine with fewer cores than workers, N workers share them: the samples/s there says
what the coordination costs, not what N machines would give (docs/performance.md works that
out from these figures).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from benchmarks.common import median, write_records
from benchmarks.report import Report, main_for, quiet_env
from benchmarks.stall_probe import stamped_lines

FLAGS = {
    "--examples": (12_000, "generated 28x28 training images (a sixth more for validation)"),
    "--epochs": (2, "epochs per run; samples/s is the last epoch's"),
    "--global-batch": (64, "examples per global batch, the same in every arm"),
    "--workers": ("1,2", "the arms: numbers of local worker processes"),
    "--rounds": (1, "runs per arm, in A B .. B A order"),
    "--allreduce-reps": (30, "all-reduces timed per arm"),
}

FIT_SCRIPT = """
import sys
from tbpipe.components.training.config import TrainConfig
from tbpipe.components.training.worker import WorkerTask, run_fit_step
train, val, out, epochs, batch, workers = sys.argv[1:7]
config = TrainConfig(epochs=int(epochs), batch_size=int(batch), workers=int(workers),
                     precision="float32", seed=7)
run_fit_step(WorkerTask("train", config, train, val, out + "/model", out + "/logs/train"))
"""

ALLREDUCE_SCRIPT = """
import json, statistics, sys, time
from tbpipe.components.training.distributed import start_multi_worker
strategy = start_multi_worker(300)
import tensorflow as tf
size, reps = int(sys.argv[1]), int(sys.argv[2])
grads = tf.ones([size], tf.float32)

@tf.function
def step():
    return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce("SUM", grads))

def once():
    started = time.perf_counter()
    strategy.experimental_local_results(step())[0].numpy()
    return time.perf_counter() - started

for _ in range(3):
    once()
print(json.dumps({"allreduce_ms": 1000 * statistics.median(once() for _ in range(reps))}))
"""


def cnn_params(side: int = 28, classes: int = 10) -> int:
    """Trainable parameters of tbpipe's built-in CNN on ``side`` x ``side`` x 1 images."""
    flat = ((side - 2) // 2 - 2) // 2
    return (32 * 10) + (64 * (9 * 32 + 1)) + (flat * flat * 64 * 128 + 128) + (
        128 * classes + classes)


def fit_arm(train: str, val: str, out: str, args: argparse.Namespace, workers: int) -> dict:
    """One run of the train step with ``workers`` workers: samples/s, accuracy, wall time."""
    from tbpipe.components.common.progress import parse

    lines, wall, code = stamped_lines(
        [sys.executable, "-c", FIT_SCRIPT, train, val, out, str(args.epochs),
         str(args.global_batch // workers), str(workers)], quiet_env())
    if code:
        tail = "\n".join(text for _, text in lines[-20:])
        raise RuntimeError(f"{workers} worker(s) failed ({code}):\n{tail}")
    batches = [(t, e) for t, text in lines if (e := parse(text)) and e["event"] == "batch"
               and e["epoch"] == args.epochs]
    epochs = [e for _, text in lines if (e := parse(text)) and e["event"] == "epoch"]
    (t0, first), (t1, last) = batches[0], batches[-1]
    seconds = t1 - t0
    samples = (last["batch"] - first["batch"]) * args.global_batch
    return {"samples_per_s": samples / seconds if seconds > 0 else 0.0,
            "val_accuracy": float(epochs[-1]["val_accuracy"]), "wall_s": wall}


def allreduce_arm(workers: int, size: int, reps: int) -> float:
    """Median milliseconds of one all-reduce of ``size`` float32 over ``workers`` processes."""
    from tbpipe.components.training.distributed import run_local_workers

    if workers == 1:
        return 0.0
    lines: list[str] = []
    run_local_workers([sys.executable, "-c", ALLREDUCE_SCRIPT, str(size), str(reps)],
                      quiet_env(), workers, lines.append)
    return float(json.loads(next(line for line in reversed(lines)
                                 if line.startswith("{")))["allreduce_ms"])


def run(args: argparse.Namespace) -> Report:
    """Generate the data, run the arms in A B .. B A order, tabulate medians and ratios."""
    from benchmarks.common import mnist_like

    arms = [int(n) for n in str(args.workers).split(",")]
    order = [n for r in range(args.rounds) for n in (arms if r % 2 == 0 else arms[::-1])]
    order += order[::-1]  # A B B A: each arm runs twice per round
    params = cnn_params()
    runs: dict[int, list[dict]] = {n: [] for n in arms}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        images, labels = mnist_like(args.examples + args.examples // 6, seed=11)
        train, val = os.path.join(tmp, "train"), os.path.join(tmp, "val")
        write_records(train, images[:args.examples], labels[:args.examples])
        write_records(val, images[args.examples:], labels[args.examples:])
        for i, workers in enumerate(order):
            started = time.perf_counter()
            result = fit_arm(train, val, os.path.join(tmp, f"run{i}"), args, workers)
            runs[workers].append(result)
            print(f"# {workers} worker(s): {result['samples_per_s']:.0f} samples/s, "
                  f"val_accuracy {result['val_accuracy']:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        allreduce = {n: allreduce_arm(n, params, args.allreduce_reps) for n in arms}
    base = median([r["samples_per_s"] for r in runs[arms[0]]])
    base_acc = median([r["val_accuracy"] for r in runs[arms[0]]])
    rows, headline = [], {"gradient_bytes": params * 4, "cores": os.cpu_count()}
    for n in arms:
        rate = median([r["samples_per_s"] for r in runs[n]])
        acc = median([r["val_accuracy"] for r in runs[n]])
        step_s = args.global_batch / rate if rate else 0.0
        rows.append([n, args.global_batch // n, f"{rate:.0f}", f"{rate / base:.2f}",
                     f"{allreduce[n]:.1f}", f"{1000 * step_s:.1f}", f"{acc:.4f}",
                     f"{acc - base_acc:+.4f}", len(runs[n])])
        headline[f"samples_per_s_{n}"] = rate
        headline[f"allreduce_ms_{n}"] = allreduce[n]
        headline[f"val_accuracy_{n}"] = acc
    return Report(
        "bench_workers", "Local workers on one global batch",
        ["workers", "batch per worker", "samples/s", "vs 1", "all-reduce ms/step",
         "ms/step", "val_accuracy", "vs 1", "runs"], rows,
        notes=[f"{args.examples} generated 28x28 images, {args.epochs} epochs, global batch "
               f"{args.global_batch}, float32; the built-in CNN: {params} parameters, "
               f"{params * 4 / 1e6:.2f} MB of float32 gradients per step",
               f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end: "
               "the workers share the cores"],
        headline=headline)


def summary(headline: dict) -> list[str]:
    """The benchmark's line in ``python -m benchmarks``' summary."""
    two = headline.get("samples_per_s_2", 0.0)
    one = headline.get("samples_per_s_1", 0.0)
    return ["bench_workers", f"2 workers: {two / one if one else 0:.2f}x the samples/s of 1, "
            f"val_accuracy {headline.get('val_accuracy_2', 0):.4f} vs "
            f"{headline.get('val_accuracy_1', 0):.4f}", "same accuracy"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_workers", __doc__, FLAGS, run, summary=summary))
