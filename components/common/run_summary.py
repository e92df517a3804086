"""One small summary file per run, ``{log_root}/{experiment}/{run}/_summary.json``.

The run's last step writes it whole (select-model, then promote when the run promotes:
``storage.write_bytes``, a temp file + rename locally, one upload to a store), so a reader sees
the summary of a finished run or none. ``tbpipe runs`` lists a log root from these files
(:func:`list_runs`), plus the claimed runs (``_run.json``) that have none yet.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping

from tbpipe.components.common import storage
from tbpipe.components.common.errors import StorageError
from tbpipe.components.common.naming import tensorboard_run_url, validate_name
from tbpipe.components.common.run_claim import RUN_MARKER

SUMMARY_FILE = "_summary.json"
SUMMARY_FORMAT = "tbpipe.run-summary.v1"
#: tensorboardX names event files ``events.out.tfevents.{unix time}.{host}...``.
_EVENT_TIME = re.compile(r"(?:^|/)events\.out\.tfevents\.(\d+(?:\.\d+)?)\.")


def summary_uri(log_root: str, experiment: str, run: str) -> str:
    """``{log_root}/{experiment}/{run}/_summary.json``, every segment validated."""
    return storage.join(log_root, validate_name("experiment", experiment),
                        validate_name("run", run), SUMMARY_FILE)


def run_facts(log_root: str, experiment: str, run: str) -> dict:
    """What the run folder shows: the steps that logged and when its first event was written.

    Returns:
        ``{"steps": [step, ...], "started": unix time or None}``.

    """
    run_dir = storage.join(log_root, validate_name("experiment", experiment),
                           validate_name("run", run))
    files = storage.list_files(run_dir) if storage.exists(run_dir) else []
    steps = sorted({f.split("/", 1)[0] for f in files if "/" in f})
    times = [float(m[1]) for f in files if (m := _EVENT_TIME.search(f))]
    return {"steps": steps, "started": min(times) if times else None}


def write_run_summary(log_root: str, experiment: str, run: str, selection: Mapping,
                      tensorboard_url: str, promotion: Mapping | None = None) -> dict:
    """Write the run's ``_summary.json`` whole, replacing an earlier one; returns it.

    Args:
        log_root: The shared TensorBoard root (a folder or a store URI).
        experiment: The experiment.
        run: The run's name.
        selection: select-model's summary (``final_model``, ``final_accuracy``,
            ``accuracy``, ``model_uri``).
        tensorboard_url: The TensorBoard that serves ``log_root``.
        promotion: The promote step's decision, if the run had one.

    """
    facts = run_facts(log_root, experiment, run)
    summary = {
        "format": SUMMARY_FORMAT,
        "experiment": experiment,
        "run": run,
        "started": facts["started"],
        "finished": time.time(),
        "steps": facts["steps"],
        "test_accuracy": selection.get("final_accuracy"),
        "final_model": selection.get("final_model"),
        "finetuned": "finetuned" in selection.get("accuracy", {}),
        "model_uri": selection.get("model_uri"),
        "promotion": dict(promotion) if promotion else None,
        "tensorboard_url": tensorboard_run_url(tensorboard_url, f"{experiment}/{run}"),
    }
    storage.write_bytes(summary_uri(log_root, experiment, run),
                        json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


def read_run_summary(log_root: str, experiment: str, run: str) -> dict | None:
    """The run's summary, or None if it has none (yet); StorageError if it is unreadable."""
    uri = summary_uri(log_root, experiment, run)
    if not storage.exists(uri):
        return None
    return _parse(uri, storage.read_bytes(uri))


def _parse(uri: str, data: bytes) -> dict:
    try:
        summary = json.loads(data)
    except ValueError as exc:
        raise StorageError(f"{uri}: not a run summary (not JSON); delete it or rerun "
                           "the run's last step") from exc
    if not isinstance(summary, dict):
        raise StorageError(f"{uri}: not a run summary (not a JSON object); delete it or "
                           "rerun the run's last step")
    return summary


def list_runs(log_root: str) -> list[dict]:
    """Every run under ``log_root``, newest first.

    A run with a ``_summary.json`` is listed from it; a claimed run (``_run.json``) without
    one (still running, or failed) is listed with ``"status": "unfinished"`` and what its
    folder shows. One listing of ``log_root`` finds both.

    Raises:
        StorageError: ``log_root`` cannot be listed, or a summary there cannot be read.

    """
    if not storage.exists(log_root):
        raise StorageError(f"{log_root}: no such log root; pass the --log-root the runs "
                           "wrote to")
    runs: dict[tuple[str, str], dict] = {}
    for rel in storage.list_files(log_root):
        parts = rel.split("/")
        if len(parts) != 3 or parts[2] not in (SUMMARY_FILE, RUN_MARKER):
            continue
        experiment, run, name = parts
        if name == SUMMARY_FILE:
            summary = _parse(storage.join(log_root, rel), storage.read_bytes(
                storage.join(log_root, rel)))
            runs[(experiment, run)] = {**summary, "status": "finished"}
        elif (experiment, run) not in runs:
            runs[(experiment, run)] = {"experiment": experiment, "run": run,
                                       "status": "unfinished"}
    for (experiment, run), entry in runs.items():
        if entry["status"] == "unfinished":
            entry.update(run_facts(log_root, experiment, run))
    return sorted(runs.values(), key=_newest_first)


def _newest_first(entry: dict) -> tuple:
    started = entry.get("started")
    return (-(started if isinstance(started, int | float) else float("-inf")),
            entry.get("experiment", ""), entry.get("run", ""))
