"""Decisions between steps: the best trial of a sweep, whether to fine-tune, the final model."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.model_format import META_FILE
from tbpipe.components.common.storage import atomic_dir
from tbpipe.components.selection.config import FINETUNE_MODES

SKIP, SAME_DATA, OTHER_DATA = "skip", "same-data", "other-data"


def should_finetune(mode: str, meets_target: bool, drifted: bool = False) -> bool:
    """Whether to fine-tune: ``always``, ``never``, or ``auto``.

    ``auto`` fine-tunes when the target is missed or the data drifted significantly from the
    champion's (check-data's ``drifted``).
    """
    if mode not in FINETUNE_MODES:
        raise InputError(f"finetune mode {mode!r} is unknown; "
                         f"use one of {', '.join(FINETUNE_MODES)}")
    return mode == "always" or (mode == "auto" and (not meets_target or drifted))


def select_best(candidates: list[tuple[str, str, float]]) -> tuple[str, str, float]:
    """Pick the ``(name, model_uri, accuracy)`` with the highest accuracy; ties keep the earlier.

    Raises:
        InputError: no candidates, or a candidate whose accuracy is not a finite number in
            [0, 1] (a broken model; NaN would compare false and be kept silently).

    """
    if not candidates:
        raise InputError("no candidate models to choose from; pass at least one evaluated model")
    for name, uri, accuracy in candidates:
        if not (math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
            raise InputError(f"{uri}: the {name} model's accuracy is {accuracy}, not a number "
                             "in [0, 1]; the model is broken: retrain it (a lower learning "
                             "rate) before a model is selected")
    best = candidates[0]
    for candidate in candidates[1:]:
        if candidate[2] > best[2]:
            best = candidate
    return best


def finetune_plan(mode: str, meets_target: bool, finetune_data: str,
                  drifted: bool = False) -> str:
    """``skip``, ``same-data`` or ``other-data`` (fine-tune on ``finetune_data``)."""
    if not should_finetune(mode, meets_target, drifted):
        return SKIP
    return OTHER_DATA if finetune_data else SAME_DATA


def choose_model(trained_uri: str, trained_accuracy: float, best_uri: str,
                 finetuned_uri: str | None = None, finetuned_accuracy: float = -1.0) -> dict:
    """Copy the most accurate model to ``best_uri`` and say which one it was.

    A tbpipe Model (a folder with ``model.json``) also gets its servable export,
    ``saved_model/`` (see :mod:`tbpipe.components.common.serving`), written in the same
    atomic swap as the rest of the folder; anything else is copied as it is.

    Returns:
        ``{"final_model": "trained" | "finetuned", "model_uri": ..., "accuracy": {...}}``.
    """
    candidates = [("trained", trained_uri, trained_accuracy)]
    if finetuned_uri is not None:
        candidates.append(("finetuned", finetuned_uri, finetuned_accuracy))
    name, source, accuracy = select_best(candidates)
    with atomic_dir(best_uri) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        if os.path.exists(os.path.join(tmp, META_FILE)):
            from tbpipe.components.common.serving import SAVED_MODEL_DIR, export_model_folder

            shutil.rmtree(os.path.join(tmp, SAVED_MODEL_DIR), ignore_errors=True)
            export_model_folder(tmp)
    return {
        "final_model": name,
        "model_uri": best_uri,
        "final_accuracy": accuracy,
        "accuracy": {n: a for n, _, a in candidates},
    }


def summary_json(summary: dict) -> str:
    """The pipeline's output: the selection summary as one JSON line."""
    return json.dumps(summary, sort_keys=True)


def choose_trial(model_uris: Sequence[str], trials: Sequence[Mapping[str, object]],
                 best_uri: str) -> dict:
    """Copy the model of the sweep's best trial, by validation accuracy, to ``best_uri``.

    Each model says which trial it is (``trial`` in its ``model.json``, written by the train
    step), so the order the models arrive in does not matter; ties keep the earlier trial.

    Args:
        model_uris: The trials' trained Model folders (a ``dsl.Collected`` of the loop).
        trials: The sweep's trials, ``{"trial": "trial-01", parameter: value, ...}``.
        best_uri: Where the best trial's Model folder goes (copied whole, atomically).

    Returns:
        ``{"best_trial": ..., "trials": [rows]}``, a row per trial in trial order: its
        parameters, ``val_accuracy`` and ``val_loss``.

    Raises:
        InputError: a model is not a trial of this sweep, or a trial has no model.

    """
    from tbpipe.components.common.model_format import read_model_meta

    planned = [str(trial["trial"]) for trial in trials]
    found: dict[str, tuple[str, dict]] = {}
    for uri in model_uris:
        meta = read_model_meta(uri)
        name = str(meta.get("trial", ""))
        if name not in planned:
            raise InputError(f"{uri}: a model of no trial of this sweep (trial {name!r}); "
                             "pass the models of the sweep's train steps")
        metrics = meta.get("metrics")
        if not isinstance(metrics, dict) or not {"val_accuracy", "val_loss"} <= set(metrics):
            raise InputError(f"{uri}: {META_FILE} has no final val_accuracy/val_loss; pass "
                             "the models of the sweep's train steps")
        found[name] = (uri, metrics)
    missing = [name for name in planned if name not in found]
    if missing:
        raise InputError(f"no model for {', '.join(missing)}: every trial of the sweep must "
                         "have trained")
    rows = []
    for trial in trials:
        metrics = found[str(trial["trial"])][1]
        rows.append({**trial, "val_accuracy": float(metrics["val_accuracy"]),
                     "val_loss": float(metrics["val_loss"])})
    best, source, _ = select_best([(row["trial"], found[row["trial"]][0], row["val_accuracy"])
                                   for row in rows])
    with atomic_dir(best_uri) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    return {"best_trial": best, "trials": rows}


def trial_table(sweep: Mapping[str, object]) -> str:
    """``choose_trial``'s result as a Markdown table, the best trial marked ``*``."""
    rows = list(sweep["trials"])
    header = [key for key in rows[0] if key != "trial"] if rows else []
    lines = ["| trial | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for row in rows:
        mark = " *" if row["trial"] == sweep["best_trial"] else ""
        cells = [f"{row[k]:.4f}" if k.startswith("val_") else str(row[k]) for k in header]
        lines.append(f"| {row['trial']}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
