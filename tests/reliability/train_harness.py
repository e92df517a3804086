"""Run the train component in its own process, slowed down and watched, for the kill tests.

    python -m tests.reliability.train_harness SPEC.json

SPEC holds ``data`` (a folder with ``train/`` and ``val/`` Datasets), ``out`` (model, metrics
and ``result.json`` go there), ``log_root``, ``checkpoint_root``, ``epochs``, ``batch_size``,
``learning_rate``, ``seed``, ``flush_secs``, ``run_name``, ``delay``, ``progress`` and
``storage_deadline`` (seconds GCS calls retry before failing; None: the default, 120) and
``hold_at`` (a global step, or None).

The only change to the step: after the TensorBoard callback has logged a training batch,
the harness appends ``<global step> <wall time>`` to ``progress`` and sleeps ``delay`` seconds,
so a test can kill the process mid-epoch and know what had been logged, and when. A SIGKILL
leaves the progress lines already written (they go straight to the OS). At step ``hold_at``
it also waits (up to 5 minutes) until the file ``<progress>.release`` exists: a test injects
its fault at exactly that point, however slow the machine, then releases the step.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(spec_path: str) -> int:
    """Run the train component as SPEC says; exit status as the component's."""
    from kfp.dsl import Dataset, Metrics, Model

    from tbpipe.components import train
    from tbpipe.components.common import storage
    from tbpipe.components.training.tensorboard_callback import TensorBoardX

    spec = json.loads(open(spec_path).read())
    if spec.get("storage_deadline") is not None:
        storage.DEFAULT_DEADLINE_S = spec["storage_deadline"]
    progress = os.open(spec["progress"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    logged = TensorBoardX.on_train_batch_end

    release = f"{spec['progress']}.release"

    def watched(self, batch: int, logs=None) -> None:  # noqa: ANN001
        logged(self, batch, logs)
        os.write(progress, f"{self._step} {time.time():.3f}\n".encode())
        time.sleep(spec["delay"])
        if self._step == spec.get("hold_at"):
            stop_at = time.monotonic() + 300
            while not os.path.exists(release) and time.monotonic() < stop_at:
                time.sleep(0.02)

    TensorBoardX.on_train_batch_end = watched
    model, metrics = Model(uri=f"{spec['out']}/model"), Metrics(uri=f"{spec['out']}/metrics")
    train.python_func(
        train_data=Dataset(uri=f"{spec['data']}/train"),
        val_data=Dataset(uri=f"{spec['data']}/val"),
        model=model, metrics=metrics, log_root=spec["log_root"], experiment="exp",
        run_name=spec["run_name"], job_name="job", epochs=spec["epochs"],
        batch_size=spec["batch_size"], learning_rate=spec["learning_rate"], seed=spec["seed"],
        checkpoint_root=spec["checkpoint_root"], flush_secs=spec["flush_secs"])
    with open(f"{spec['out']}/result.json", "w") as handle:
        json.dump({"metrics": dict(metrics.metadata), "model": dict(model.metadata)}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
