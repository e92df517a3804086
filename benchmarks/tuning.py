"""Tuning: TPE with median pruning against the full grid and random search, same trial-epochs.

    python -m benchmarks.tuning [--seeds 0,1,2] [--epochs 10] [--parallel 3]

The task: scikit-learn's digits (1,797 8x8 images, 10 classes), split once (seed 0,
stratified) into 60 % training and 40 % held-out validation; a trial trains a one-hidden-layer
MLP (scikit-learn's ``MLPClassifier``, Adam, one ``partial_fit`` pass per epoch, initial
weights seeded by the benchmark seed) for ``--epochs`` epochs and scores the validation set
after each. The space: ``learning_rate=1e-4..3e-1:log``, ``model.width=16|32|64``,
``batch_size=32|128``; its grid (5 x 3 x 2 = 30 points) run whole is the budget in
trial-epochs every other arm gets.

Each arm runs tbpipe's own tuning code: trials come from ``suggest_trials`` (the records on
disk, the named sampler seeded by the benchmark seed), in rounds of ``--parallel`` trials that
train side by side epoch by epoch (as a round's pods do); after each epoch a trial logs
``epoch/val_accuracy`` to its event file with tbpipe's writer, and its ``TrialReporter`` reads
it back and asks the pruner, exactly as the train step's callback does. A Keras model is left
out so that several seeds of four arms run in minutes on two CPUs; the search logic measured
is the same.

Reported per arm (median over seeds, and each seed): the best validation accuracy reached
within the budget, and the trial-epochs spent when the best result so far first came within
0.5 % (relative) of the grid's best on that seed (a trial's result counts once it finishes,
pruned or not). Goal: TPE + median reaches it in at most half the grid's trial-epochs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from benchmarks.common import progress
from benchmarks.report import Report, main_for

FLAGS = {
    "--seeds": ("0,1,2", "benchmark seeds (samplers and initial weights), comma-separated"),
    "--epochs": (10, "epochs a trial trains unless pruned"),
    "--parallel": (3, "trials per round, trained side by side"),
    "--arms": ("grid,random,tpe,tpe+median", "arms: SAMPLER or SAMPLER+PRUNER"),
}
SPACE = ("learning_rate=1e-4..3e-1:log", "model.width=16|32|64", "batch_size=32|128")
WITHIN = 0.005  # relative: "within 0.5 % of the grid's best"


def digits_split():
    """Digits in [0, 1], split 60/40 (stratified, seed 0): x_train, y_train, x_val, y_val."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.4,
                                                      stratify=y, random_state=0)
    return x_train, y_train, x_val, y_val


class Trial:
    """One trial: its MLP, its event file and its reporter (tbpipe's, reading the events)."""

    def __init__(self, study: str, record, pruner: str, epochs: int, seed: int,
                 logs: str, data) -> None:
        import contextlib

        from sklearn.neural_network import MLPClassifier

        from tbpipe.components.common.tensorboard.writer import open_writer
        from tbpipe.components.tuning.pruning import TrialReporter

        self.record, self.data, self.epochs = record, data, epochs
        params = record.params
        self.model = MLPClassifier(hidden_layer_sizes=(params["model.width"],),
                                   learning_rate_init=params["learning_rate"],
                                   batch_size=params["batch_size"], random_state=seed)
        self.steps = -(-len(data[0]) // params["batch_size"])
        log_dir = os.path.join(logs, f"trial-{record.number:03d}")
        self.stack = contextlib.ExitStack()
        self.writer = self.stack.enter_context(open_writer(log_dir, flush_secs=60))
        self.reporter = TrialReporter(study, record.number, pruner, epochs, log_dir=log_dir)
        self.reporter.watch(log_dir)
        self.epoch, self.last, self.done = 0, 0.0, False

    def step(self) -> None:
        """Train one epoch, log it, report it; done when pruned or out of epochs."""
        from tbpipe.components.common.tensorboard.writer import sync_events

        x_train, y_train, x_val, y_val = self.data
        self.model.partial_fit(x_train, y_train, classes=list(range(10)))
        self.epoch += 1
        self.last = float(self.model.score(x_val, y_val))
        self.writer.add_scalar("epoch/val_accuracy", self.last, self.epoch * self.steps)
        sync_events(self.writer)
        pruned = self.reporter.epoch_end()
        if pruned or self.epoch == self.epochs:
            self.reporter.finish({"val_accuracy": self.last}, epochs_run=self.epoch)
            self.stack.close()
            self.done = True


def run_arm(arm: str, seed: int, args: argparse.Namespace, data, folder: str) -> dict:
    """One arm on one seed: the results as they finished, ``[(trial-epochs spent, value)]``."""
    from tbpipe.components.tuning.objectives import parse_objectives
    from tbpipe.components.tuning.space import SearchSpace
    from tbpipe.components.tuning.study import suggest_trials

    sampler, _, pruner = arm.partition("+")
    space = SearchSpace.parse(SPACE)
    budget = space.grid_size() * args.epochs
    study = os.path.join(folder, arm, str(seed), "study")
    logs = os.path.join(folder, arm, str(seed), "logs")
    spent, finished, pruned_at, best = 0, [], [], None
    objectives = parse_objectives(["val_accuracy:max"])
    while spent < budget:
        records = suggest_trials(study, space, sampler, args.parallel, seed, objectives)
        if not records:
            break  # a grid used up
        trials = [Trial(study, r, pruner or "none", args.epochs, seed, logs, data)
                  for r in records]
        while any(not t.done for t in trials):
            for trial in trials:
                if not trial.done and spent < budget:
                    trial.step()
                    spent += 1
                    if trial.done:
                        finished.append((spent, trial.last))
                        if trial.reporter.pruned:
                            pruned_at.append(trial.epoch)
                        if best is None or trial.last > best[0]:
                            best = (trial.last, trial.record.params)
            if spent >= budget:
                break
        for trial in trials:  # the budget ran out mid-round: close what is still open
            if not trial.done:
                trial.stack.close()
    return {"results": finished, "spent": spent, "budget": budget, "trials": len(finished),
            "pruned": len(pruned_at), "pruned_at": pruned_at, "best_params": best[1]}


def to_reach(results: list[tuple[int, float]], target: float) -> int | None:
    """Trial-epochs spent when the best result so far first reached ``target``."""
    for spent, value in results:
        if value >= target:
            return spent
    return None


def run(args: argparse.Namespace) -> Report:
    """Every arm on every seed; the table of best accuracies and trial-epochs to the grid's best."""
    import warnings

    warnings.filterwarnings("ignore")  # scikit-learn's ConvergenceWarning of a single pass
    seeds = [int(s) for s in str(args.seeds).split(",")]
    arms = [a.strip() for a in str(args.arms).split(",")]
    data = digits_split()
    per: dict[str, list[dict]] = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(prefix="tbpipe-bench-tuning-") as folder:
        for seed in seeds:
            for arm in ("grid", *[a for a in arms if a != "grid"]):
                progress(f"tuning: {arm}, seed {seed}")
                per.setdefault(arm, []).append(run_arm(arm, seed, args, data, folder))
    grid = per["grid"]
    rows, seed_rows = [], []
    for arm in per:
        bests, reach = [], []
        for i, seed in enumerate(seeds):
            out, grid_best = per[arm][i], max(v for _, v in grid[i]["results"])
            best = max(v for _, v in out["results"])
            spent = to_reach(out["results"], grid_best * (1 - WITHIN))
            bests.append(best)
            reach.append(spent)
            at = out["pruned_at"]
            params = out["best_params"]
            seed_rows.append([arm, seed, f"{best:.4f}", f"{grid_best:.4f}",
                              "not reached" if spent is None else spent, out["spent"],
                              out["trials"], out["pruned"],
                              f"{statistics.median(at):.0f}" if at else "-",
                              f"{params['learning_rate']:.2g}, {params['model.width']}, "
                              f"{params['batch_size']}"])
        reached = [r for r in reach if r is not None]
        budget = per[arm][0]["budget"]
        median = statistics.median(reached) if len(reached) == len(seeds) else None
        rows.append([arm, f"{statistics.median(bests):.4f}",
                     f"{len(reached)}/{len(seeds)}",
                     "-" if median is None else f"{median:.0f}",
                     "-" if median is None else f"{median / budget:.2f}"])
    report = Report("tuning", "Tuning on digits: best validation accuracy and trial-epochs to "
                    "the grid's best (same budget)",
                    ["arm", "best val_accuracy (median)", "seeds reaching the grid's best",
                     "trial-epochs to it (median)", "share of the grid's budget"], rows)
    report.add_table("Each seed", ["arm", "seed", "best val_accuracy", "grid's best",
                                   "trial-epochs to within 0.5 %", "trial-epochs spent",
                                   "trials finished", "pruned", "pruned at epoch (median)",
                                   "best trial: learning rate, width, batch"], seed_rows)
    budget = per["grid"][0]["budget"]
    report.notes.append(f"budget: the full grid, {budget} trial-epochs ({budget // args.epochs} "
                        f"points x {args.epochs} epochs); rounds of {args.parallel} trials "
                        "trained side by side; 'within 0.5 %' is relative to the grid's best "
                        "on the same seed.")
    tpe = next((row for row in rows if row[0] == "tpe+median"), None)
    if tpe is not None:
        report.headline["tpe_median_share_of_grid"] = tpe[4]
    return report


if __name__ == "__main__":
    raise SystemExit(main_for("tuning", __doc__, FLAGS, run))
