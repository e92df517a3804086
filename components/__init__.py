"""tbpipe's KFP components, to use in tbpipe's pipeline or your own.

    from tbpipe.components import preprocess, train, evaluate, finetune

Each needs only its inputs and ``log_root``; the experiment defaults to ``default`` and the
run to the KFP job's name, so every step of one pipeline run logs side by side under
``{log_root}/{experiment}/{run}/{step}``. ``decide_finetune``, ``select_model`` and
``select_trial`` (a sweep's best trial), ``suggest`` and ``select_tuned`` (a ``--tune``
search's rounds and best trial) route tbpipe's own DAG; ``check_data`` checks Datasets
before training (copies between splits, health, drift from a champion); ``promote`` copies
a model to production only if it beats the one there; ``batch_predict`` gives the top
classes of many images (a folder, a CSV/Parquet list or a URI) as a Parquet/CSV Dataset;
``notify`` sends a run's outcome (the exit task). Each wrapper lives in its step's
``component.py`` (selection's each in their own module), the logic (no kfp) beside it in
``core.py``.

The components load when first named: a running step imports its own modules only (inside a
KFP executor ``kfp.dsl`` has no ``component`` decorator to build the others with).
"""

import importlib

_HOMES = {
    "preprocess": "tbpipe.components.preprocessing.component",
    "train": "tbpipe.components.training.component",
    "evaluate": "tbpipe.components.evaluation.component",
    "finetune": "tbpipe.components.finetuning.component",
    "decide_finetune": "tbpipe.components.selection.decide_finetune",
    "select_model": "tbpipe.components.selection.select_model",
    "promote": "tbpipe.components.promotion.component",
    "select_trial": "tbpipe.components.selection.select_trial",
    "select_tuned": "tbpipe.components.selection.select_tuned",
    "suggest": "tbpipe.components.tuning.component",
    "batch_predict": "tbpipe.components.prediction.component",
    "notify": "tbpipe.components.notification.component",
    "check_data": "tbpipe.components.data_checks.component",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
