"""Decisions between steps: whether to fine-tune, and which model the run ends with."""

from __future__ import annotations

import json
import os
import shutil

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.model_format import META_FILE
from tbpipe.components.common.storage import atomic_dir

FINETUNE_MODES = ("auto", "always", "never")
SKIP, SAME_DATA, OTHER_DATA = "skip", "same-data", "other-data"


def should_finetune(mode: str, meets_target: bool) -> bool:
    """Whether to fine-tune: ``always``, ``never``, or ``auto`` (only if the target is missed)."""
    if mode not in FINETUNE_MODES:
        raise InputError(f"finetune mode {mode!r} is unknown; "
                         f"use one of {', '.join(FINETUNE_MODES)}")
    return mode == "always" or (mode == "auto" and not meets_target)


def select_best(candidates: list[tuple[str, str, float]]) -> tuple[str, str, float]:
    """Pick the ``(name, model_uri, accuracy)`` with the highest accuracy; ties keep the earlier."""
    if not candidates:
        raise InputError("no candidate models to choose from; pass at least one evaluated model")
    best = candidates[0]
    for candidate in candidates[1:]:
        if candidate[2] > best[2]:
            best = candidate
    return best


def finetune_plan(mode: str, meets_target: bool, finetune_data: str) -> str:
    """``skip``, ``same-data`` or ``other-data`` (fine-tune on ``finetune_data``)."""
    if not should_finetune(mode, meets_target):
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
