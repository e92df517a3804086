"""Benchmark 2: what TensorBoard logging costs the train step, and Keras' callback alongside.

    python -m benchmarks.bench_logging [--samples 10000] [--batch-size 128]

Part 1, the train step (``fit_and_save`` on Dataset folders), alternating in one process:
full logging (per-batch scalars, per-epoch weight histograms, hparams: the defaults) against
logging off (``batch_log_every=0, histogram_every=0``; the six epoch scalars remain).

Part 2, the callbacks alone on one bare ``model.fit`` loop (one warm model, one-epoch fits,
the arms in turn): no callback; a no-op per-batch callback (what Keras' synchronous hook
dispatch costs by itself); tbpipe's ``TensorBoardX`` on ``open_writer``, as in the train step;
the callback as it was before this benchmark (``add_scalar`` per metric through tensorboardX's
multiprocessing queue); and ``keras.callbacks.TensorBoard(update_freq="batch",
histogram_freq=1)``. Besides epoch wall times (noisy on a shared machine) it reports the time
spent inside the callbacks' hooks and the extra CPU seconds per epoch (writer threads
included).
"""

from __future__ import annotations

import argparse
import os
import tempfile

from benchmarks.common import CLASSES, alternate, median, median_ratio_interval, progress, ratio
from benchmarks.fit_arms import SHAPE, Arms, after_first, epoch_clock
from benchmarks.logging_arms import BEFORE, KERAS, NONE, TBPIPE, callback_arms
from benchmarks.logging_toggle import TOGGLE_HEADER, toggle_headline, toggle_part, toggle_rows
from benchmarks.report import Report, change, change_interval, fmt, main_for

FULL = {"batch_log_every": 1, "histogram_every": 1}
OFF = {"batch_log_every": 0, "histogram_every": 0}

FLAGS = {
    "--samples": (10_000, "training images"),
    "--batch-size": (128, "part 1 batch size"),
    "--epochs": (4, "part 1: epochs per fit; the first is not timed"),
    "--rounds": (3, "part 1: fits per arm"),
    "--callback-batch-size": (32, "part 2 batch size (32, the pipeline's default: most batches)"),
    "--callback-samples": (8_000, "part 2 images per epoch"),
    "--cycles": (5, "part 2: one-epoch fits per callback arm, the arms in turn"),
    "--toggle-epochs": (16, "part 3: epochs of the one fit with logging toggled (0: skip)"),
}


def step_part(arms: Arms, args: argparse.Namespace) -> dict[str, dict]:
    """Part 1: the train step with full logging and with logging off, alternating."""
    return alternate(args.rounds, {
        "full": lambda: arms.step(args.batch_size, args.epochs, **FULL)[:2],
        "off": lambda: arms.step(args.batch_size, args.epochs, **OFF)[:2],
    }, "logging: step")


def callback_part(arms: Arms, args: argparse.Namespace, root: str) -> dict[str, dict]:
    """Part 2: one warm model; one-epoch fits cycle through the arms, ``--cycles`` times."""
    from tbpipe.components.training.model import build_cnn

    x, y = arms.x[:args.callback_samples], arms.y[:args.callback_samples]
    model = build_cnn(SHAPE, CLASSES, 42)
    model.fit(x, y, batch_size=args.callback_batch_size, epochs=1, verbose=0)
    factories = callback_arms(root)
    results = {name: {"wall": [], "cpu": [], "hooks": [], "per_batch": [], "per_epoch": [],
                      "writer_cpu": []} for name in factories}
    names = list(factories)
    for cycle in range(args.cycles):
        progress(f"logging: callbacks cycle {cycle + 1}/{args.cycles}")
        for index, name in enumerate(names[cycle % len(names):] + names[:cycle % len(names)]):
            callbacks, close = factories[name](f"c{cycle}-{index}")
            clock = epoch_clock()
            model.fit(x, y, batch_size=args.callback_batch_size, epochs=1, verbose=0,
                      callbacks=[*callbacks, clock])
            writer_cpu = close()
            if writer_cpu is not None:
                results[name]["writer_cpu"].append(writer_cpu)
            results[name]["wall"] += clock.wall
            results[name]["cpu"] += clock.cpu
            callback = next((c for c in callbacks if hasattr(c, "hook_seconds")), None)
            if callback is not None:
                results[name]["hooks"].append(callback.hook_seconds)
                results[name]["per_batch"].append(callback.batch_seconds / callback.batches)
                results[name]["per_epoch"].append(callback.epoch_seconds)
    return results


def run(args: argparse.Namespace) -> Report:
    """Measure, and return the report."""
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-logging-") as root:
        progress("logging: generating data")
        arms = Arms(root, args.samples, max(500, args.samples // 10))
        step = step_part(arms, args)
        callbacks = callback_part(arms, args, os.path.join(root, "callbacks"))
        toggled = toggle_part(arms, args, root) if args.toggle_epochs else None
    report = build_report(args, step, callbacks)
    if toggled:
        report.add_table(f"Logging toggled by epoch within one fit (batch {args.batch_size}, "
                         f"{args.samples} images, ABBA after a warm-up epoch)", TOGGLE_HEADER,
                         toggle_rows(toggled, args.samples))
        report.headline.update(toggle_headline(toggled))
    return report


def build_report(args: argparse.Namespace, step: dict, callbacks: dict) -> Report:
    """The tables, headline figures and notes."""
    walls = {arm: after_first(step[arm]["clocks"]) for arm in step}
    wall = {arm: median(walls[arm]) for arm in step}
    cpu = {arm: median(after_first(step[arm]["clocks"], "cpu")) for arm in step}
    rows = [[f"logging {arm}", fmt(ratio(args.samples, wall[arm])), f"{wall[arm]:.3f}",
             change(wall[arm], wall["off"]),
             change_interval(walls[arm], walls["off"]) if arm != "off" else "",
             change(cpu[arm], cpu["off"]), f"{median(step[arm]['e2e']):.1f}"]
            for arm in ("off", "full")]
    report = Report("bench_logging", "2. Logging overhead: the train step, logging on vs off",
                    ["train step", "samples/s", "s/epoch", "slower (wall)", "90% interval",
                     "more CPU", "end-to-end s"], rows)
    steps = -(-args.callback_samples // args.callback_batch_size)
    report.add_table(
        f"Callbacks on a bare model.fit, batch {args.callback_batch_size} ({steps} batches "
        "per epoch, 2 scalars each, 8 weight histograms per epoch)",
        ["callback", "s/epoch", "slower (wall)", "90% interval", "us per batch hook",
         "ms per epoch hook", "hooks / epoch", "writer thread CPU ms/epoch",
         "logging work / epoch", "extra CPU-s/epoch"], callback_rows(callbacks))
    report.headline = headline(walls, wall, cpu, callbacks)
    report.notes += notes(args)
    return report


def callback_rows(callbacks: dict) -> list[list[object]]:
    """Part 2's table: each callback arm against no callback."""
    base = callbacks[NONE]
    base_wall, base_cpu = median(base["wall"]), median(base["cpu"])
    rows = []
    for name, result in callbacks.items():
        epoch_wall, epoch_cpu = median(result["wall"]), median(result["cpu"])
        hooks = median(result["hooks"]) if result["hooks"] else 0.0
        writer = median(result["writer_cpu"]) if result["writer_cpu"] else None
        rows.append([name, f"{epoch_wall:.3f}", change(epoch_wall, base_wall),
                     change_interval(result["wall"], base["wall"]) if result is not base else "",
                     f"{median(result['per_batch']) * 1e6:.0f}" if hooks else "-",
                     f"{median(result['per_epoch']) * 1e3:.1f}" if hooks else "-",
                     f"{ratio(hooks, epoch_wall):.2%}",
                     f"{writer * 1e3:.1f}" if writer is not None else "-",
                     f"{ratio(hooks + writer, epoch_wall):.2%}" if writer is not None else "-",
                     f"{epoch_cpu - base_cpu:+.3f}"])
    return rows


def headline(walls: dict, wall: dict, cpu: dict, callbacks: dict) -> dict:
    """The figures ``python -m benchmarks`` sums up: the step's overhead, the hooks' share."""
    base_wall = median(callbacks[NONE]["wall"])
    tbpipe, keras_row = callbacks[TBPIPE], callbacks[KERAS]
    return {
        "step_logging_overhead_wall": round(ratio(wall["full"], wall["off"]) - 1, 4),
        "step_logging_overhead_cpu": round(ratio(cpu["full"], cpu["off"]) - 1, 4),
        "step_logging_overhead_interval": [round(v - 1, 4) for v in median_ratio_interval(
            walls["full"], walls["off"])],
        "tbpipe_hooks_fraction": round(ratio(median(tbpipe["hooks"]), median(tbpipe["wall"])), 4),
        "keras_hooks_fraction": round(ratio(median(keras_row["hooks"]),
                                            median(keras_row["wall"])), 4),
        "tbpipe_us_per_batch": round(median(tbpipe["per_batch"]) * 1e6, 1),
        "tbpipe_logging_work_fraction": round(ratio(
            median(tbpipe["hooks"]) + median(tbpipe["writer_cpu"]), median(tbpipe["wall"])), 4),
        "before_us_per_batch": round(median(callbacks[BEFORE]["per_batch"]) * 1e6, 1),
        "callbacks_wall": {name: round(ratio(median(r["wall"]), base_wall) - 1, 4)
                           for name, r in callbacks.items()},
    }


def notes(args: argparse.Namespace) -> list[str]:
    """What was run, and how to read the figures."""
    return [
        f"Part 1: {args.samples} images, batch {args.batch_size}, {args.epochs} epochs per fit, "
        f"{args.rounds} rounds alternating; medians of the epochs after the first.",
        "Hook times are measured around the hooks themselves, and the writer thread's CPU time "
        "with its own thread clock (pthread_getcpuclockid), so other load on the machine "
        "barely moves them; 'logging work / epoch' = (hooks + writer thread CPU) / epoch wall "
        "time, all the work logging adds, on the loop or beside it. Wall-time differences of a "
        "few % are within the noise of this shared machine.",
        "With the TensorFlow backend Keras runs every batch hook on the training loop "
        "(backend.IS_THREAD_SAFE is False), async-safe callbacks included.",
    ]


def summary(g: dict) -> list[str]:
    """The line of ``python -m benchmarks``' summary."""
    return ["2 logging overhead", f"{g['step_logging_overhead_wall']:+.1%} wall, "
            f"{g['step_logging_overhead_cpu']:+.1%} CPU; hooks "
            f"{g['tbpipe_hooks_fraction']:.2%} of an epoch, hooks + writer thread "
            f"{g['tbpipe_logging_work_fraction']:.2%} (Keras' callback hooks "
            f"{g['keras_hooks_fraction']:.1%}); {g['tbpipe_us_per_batch']} us/batch "
            f"(was {g['before_us_per_batch']}); toggled within one fit "
            f"{g.get('toggle_overhead_cpu', float('nan')):+.1%} CPU", "<= 1% slower"]


if __name__ == "__main__":
    raise SystemExit(main_for("bench_logging", __doc__, FLAGS, run, summary=summary))
