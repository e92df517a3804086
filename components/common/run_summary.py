"""One small summary file per run, ``{log_root}/{experiment}/{run}/_summary.json``.

The run's last step writes it whole (select-model, then promote when the run promotes:
``storage.write_bytes``, a temp file + rename locally, one upload to a store), so a reader sees
the summary of a finished run or none. ``tbpipe runs`` lists a log root from these files
(:func:`list_runs`), plus the claimed runs (``_run.json``) that have none yet.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.common.limits import MAX_METADATA_BYTES
from tbpipe.components.common.naming import tensorboard_run_url, validate_name
from tbpipe.components.common.run_claim import RUN_MARKER

SUMMARY_FILE = "_summary.json"
SUMMARY_FORMAT = "tbpipe.run-summary.v1"
#: The run folder's failed steps' error lines (:func:`record_step_error`).
ERRORS_FOLDER = "_errors"
#: tensorboardX names event files ``events.out.tfevents.{unix time}.{host}...``.
_EVENT_TIME = re.compile(r"(?:^|/)events\.out\.tfevents\.(\d+(?:\.\d+)?)\.")


def summary_uri(log_root: str, experiment: str, run: str) -> str:
    """``{log_root}/{experiment}/{run}/_summary.json``, every segment validated."""
    return storage.join(log_root, validate_name("experiment", experiment),
                        validate_name("run", run), SUMMARY_FILE)


def _run_dir(log_root: str, experiment: str, run: str) -> str:
    return storage.join(log_root, validate_name("experiment", experiment),
                        validate_name("run", run))


def record_step_error(log_root: str, experiment: str, run: str, step: str, line: str,
                      trial: str = "") -> None:
    """Keep a failed step's error line in ``{run}/_errors/{step}[.{trial}].json``.

    A step's process is gone when its run's outcome is reported (``dsl.ExitHandler``'s
    notify task on a cluster: KFP tells that task the run failed, not which step nor why);
    this file does. A retried step overwrites its own. Best effort: a store that refuses the
    write (a full disk, an outage: often the step's own error) leaves none, silently; the
    step's one error line stays its only line.
    """
    name = f"{step}.{trial}.json" if trial else f"{step}.json"
    record = {"step": step, "trial": trial, "line": line[:2000], "time": time.time()}
    try:
        storage.write_bytes(storage.join(_run_dir(log_root, experiment, run), ERRORS_FOLDER,
                                         name), json.dumps(record).encode())
    except Exception:  # noqa: BLE001, S110 - the step's own error is the one to report
        pass


def read_step_errors(log_root: str, experiment: str, run: str) -> list[dict]:
    """The run's failed steps' records (:func:`record_step_error`), oldest first.

    Records that cannot be read or are not tbpipe's are left out: a report of the run's
    outcome goes out with what can be read.
    """
    folder = storage.join(_run_dir(log_root, experiment, run), ERRORS_FOLDER)
    if not storage.exists(folder):
        return []
    records = []
    for rel in storage.list_files(folder):
        uri = storage.join(folder, rel)
        try:
            record = json.loads(_read_summary(uri))
        except (StorageError, ValueError):
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), str) and isinstance(
                record.get("line"), str) and isinstance(record.get("time"), int | float):
            records.append({key: record.get(key) for key in ("step", "trial", "line", "time")})
    return sorted(records, key=lambda record: record["time"])


def run_facts(log_root: str, experiment: str, run: str) -> dict:
    """What the run folder shows: the steps that logged and when its first event was written.

    Returns:
        ``{"steps": [step, ...], "started": unix time or None}``.

    """
    run_dir = _run_dir(log_root, experiment, run)
    files = storage.list_files(run_dir) if storage.exists(run_dir) else []
    steps = sorted({f.split("/", 1)[0] for f in files if "/" in f and not f.startswith("_")})
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
        "trials": trial_states(selection.get("sweep")),
    }
    storage.write_bytes(summary_uri(log_root, experiment, run),
                        json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary


def trial_states(search: Mapping | None) -> dict[str, int] | None:
    """A sweep's or search's trials counted by state (``complete``, ``pruned``, ``failed``).

    A sweep's trials (no ``state``) all completed; None for a run without trials.
    """
    if not search or not isinstance(search.get("trials"), list):
        return None
    counts: dict[str, int] = {}
    for row in search["trials"]:
        state = str(row.get("state", "complete")) if isinstance(row, Mapping) else "complete"
        counts[state] = counts.get(state, 0) + 1
    return counts


def read_run_summary(log_root: str, experiment: str, run: str) -> dict | None:
    """The run's summary, or None if it has none (yet); StorageError if it is unreadable."""
    uri = summary_uri(log_root, experiment, run)
    if not storage.exists(uri):
        return None
    return _parse(uri, _read_summary(uri))


def _read_summary(uri: str) -> bytes:
    """The bytes of a summary file, at most MAX_METADATA_BYTES, a regular file if local."""
    try:
        return storage.read_bounded_uri(uri, MAX_METADATA_BYTES, "run summary")
    except InputError as exc:
        raise StorageError(str(exc)) from exc


def _parse(uri: str, data: bytes) -> dict:
    try:
        summary = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StorageError(f"{uri}: not a run summary (not JSON); delete it or rerun "
                           "the run's last step") from exc
    if not isinstance(summary, dict):
        raise StorageError(f"{uri}: not a run summary (not a JSON object); delete it or "
                           "rerun the run's last step")
    return summary


#: The fields ``tbpipe runs`` shows, and the check each value must pass.
_TEXT_FIELDS = ("final_model", "model_uri", "tensorboard_url", "format")
_LATEST_TIME = 253402300799.0  # 9999-12-31 23:59:59 UTC: what time.gmtime can show


def _text(value: object) -> str | None:
    """Printable text (control characters escaped, at most 300 characters), or None."""
    if not isinstance(value, str):
        return None
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in value[:300])
    return shown + ("..." if len(value) > 300 else "")


def _time(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and 0 <= value <= _LATEST_TIME else None


def checked_summary(summary: dict, experiment: str, run: str) -> dict:
    """A summary whose every shown field has the type ``tbpipe runs`` expects.

    ``experiment`` and ``run`` come from the folder (a summary cannot rename its run); a
    field of the wrong type, or a number that is not finite or out of range, becomes None
    and is named in ``problems``; text is kept printable (no terminal control sequences).
    """
    problems = []
    checked: dict = {"experiment": _text(experiment), "run": _text(run)}
    for key in ("started", "finished"):
        checked[key] = _time(summary.get(key))
    for key in _TEXT_FIELDS:
        checked[key] = _text(summary.get(key))
    accuracy = summary.get("test_accuracy")
    checked["test_accuracy"] = (float(accuracy) if isinstance(accuracy, int | float)
                                and not isinstance(accuracy, bool) and math.isfinite(accuracy)
                                and 0 <= accuracy <= 1 else None)
    finetuned = summary.get("finetuned")
    checked["finetuned"] = finetuned if isinstance(finetuned, bool) else None
    steps = summary.get("steps")
    checked["steps"] = ([_text(s) for s in steps[:64]] if isinstance(steps, list)
                        and all(isinstance(s, str) for s in steps) else [])
    promotion = summary.get("promotion")
    if isinstance(promotion, dict) and isinstance(promotion.get("promoted"), bool):
        checked["promotion"] = {"promoted": promotion["promoted"], **{
            k: v for k, v in promotion.items() if k != "promoted"
            and isinstance(v, str | int | float | bool | None)}}
    else:
        checked["promotion"] = None
    trials = summary.get("trials")
    checked["trials"] = ({_text(k)[:32]: v for k, v in list(trials.items())[:16]}
                         if isinstance(trials, dict) and all(
                             isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**6
                             for v in trials.values()) else None)
    for key, value in checked.items():
        given = summary.get(key)
        if key in ("experiment", "run") or given is None or value is not None:
            continue
        problems.append(key)
    if isinstance(steps, list) and checked["steps"] == [] and steps:
        problems.append("steps")
    checked["problems"] = sorted(set(problems))
    return checked


def list_runs(log_root: str) -> list[dict]:
    """Every run under ``log_root``, newest first.

    A run with a ``_summary.json`` is listed from it; a claimed run (``_run.json``) without
    one (still running, or failed) is listed with ``"status": "unfinished"`` and what its
    folder shows. One listing of ``log_root`` finds both. A summary that cannot be read
    (not JSON, too big, not a regular file) lists its run with ``"status": "unreadable
    summary (...)"``; fields of the wrong type are dropped and named (``problems``): a
    hostile summary never stops the listing.

    Raises:
        StorageError: ``log_root`` cannot be listed.

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
            uri = storage.join(log_root, rel)
            try:
                summary = _parse(uri, _read_summary(uri))
            except StorageError as exc:
                reason = str(exc).removeprefix(f"{uri}: ").split(";")[0]
                runs[(experiment, run)] = {"experiment": _text(experiment), "run": _text(run),
                                           "status": f"unreadable summary ({reason})"}
                continue
            entry = checked_summary(summary, experiment, run)
            entry["status"] = ("finished" if not entry["problems"] else
                               f"finished, summary fields not understood: "
                               f"{', '.join(entry['problems'])}")
            runs[(experiment, run)] = entry
        elif (experiment, run) not in runs:
            runs[(experiment, run)] = {"experiment": _text(experiment), "run": _text(run),
                                       "status": "unfinished"}
    for (experiment, run), entry in runs.items():
        if entry["status"] == "unfinished":
            try:
                entry.update(run_facts(log_root, experiment, run))
            except InputError as exc:  # a folder whose name tbpipe never writes
                entry["status"] = f"unfinished, {str(exc).split(':')[0]}"
    return sorted(runs.values(), key=_newest_first)


def _newest_first(entry: dict) -> tuple:
    started = entry.get("started")
    return (-(started if isinstance(started, int | float) else float("-inf")),
            entry.get("experiment", ""), entry.get("run", ""))
