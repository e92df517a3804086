"""The trial table: one row per trial (state, values, hyper-parameters, epochs run, error).

:func:`trial_rows` gives plain rows (JSON as they are); :func:`markdown_trial_table` the same
as Markdown, for the KFP artifact, TensorBoard's text tab and ``tbpipe run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tbpipe.components.tuning.objectives import Objective, best_trial, pareto_front
from tbpipe.components.tuning.record import TrialRecord

#: The columns every row has, in order; then one per objective and one per parameter.
BASE_COLUMNS = ("trial", "state", "epochs_run")
END_COLUMNS = ("pareto", "best", "error")


def trial_rows(records: Sequence[TrialRecord],
               objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """One dict per trial, by number, its columns in the same order in every row.

    :data:`BASE_COLUMNS`, the objectives' values (None if not measured), the parameters
    (``model.NAME`` keys as they are), ``pareto`` (on the Pareto front), ``best`` (the
    trial selection picks) and ``error``.
    """
    front = {record.number for record in pareto_front(records, objectives)}
    best = best_trial(records, objectives).number if front else None
    keys = list(dict.fromkeys(key for record in records for key in record.params))
    rows = []
    for record in records:
        row: dict[str, Any] = {"trial": record.number, "state": record.state,
                               "epochs_run": record.epochs_run}
        row.update({o.name: record.values.get(o.name) for o in objectives})
        row.update({key: record.params.get(key) for key in keys})
        row.update({"pareto": record.number in front, "best": record.number == best,
                    "error": record.error})
        rows.append(row)
    return rows


def markdown_trial_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as a Markdown table (numbers to 4 significant digits; empty cells blank)."""
    if not rows:
        return "(no trials)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key in header) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:  # noqa: ANN401
    if value is None or value is False or value == "":
        return ""
    if value is True:
        return "yes"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")
