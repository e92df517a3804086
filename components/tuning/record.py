"""A trial of a study as its file holds it (:mod:`tbpipe.components.tuning.study`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

#: A trial's states: suggested and not finished; finished and kept; stopped early by the
#: pruner (a success, its model kept); failed (its error line recorded).
STATES = ("running", "complete", "pruned", "failed")
FINISHED = ("complete", "pruned")


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One trial of a study, as its file holds it.

    Attributes:
        number: The trial's number in the study (0, 1, ...).
        params: Its hyper-parameters, key (``learning_rate``, ``model.filters``) to value.
        state: One of :data:`STATES`.
        values: What it measured, objective name (``val_accuracy``, ``params``,
            ``latency``) to value: the last epoch's metrics, for a pruned trial too.
        intermediate: The pruning metric after each epoch, epoch (1-based) to value.
        epochs_run: Epochs it trained.
        error: A failed trial's one error line.
        duration_s: Seconds from its start to its end.
        log_dir: Its TensorBoard folder.
        model_uri: Its Model folder (complete and pruned trials).
        system_attrs: The pruner's bookkeeping (Hyperband's rungs), kept between epochs.

    """

    number: int
    params: Mapping[str, Any]
    state: str = "running"
    values: Mapping[str, float] = dataclasses.field(default_factory=dict)
    intermediate: Mapping[int, float] = dataclasses.field(default_factory=dict)
    epochs_run: int = 0
    error: str = ""
    duration_s: float = 0.0
    log_dir: str = ""
    model_uri: str = ""
    system_attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        """ValueError for a state outside :data:`STATES` or a negative number."""
        if self.state not in STATES:
            raise ValueError(f"trial state {self.state!r}: must be one of {', '.join(STATES)}")
        if self.number < 0:
            raise ValueError(f"trial number {self.number}: must be 0 or more")

    def to_json(self) -> str:
        """The record as the JSON text of its file."""
        data = dataclasses.asdict(self)
        data["intermediate"] = {str(k): v for k, v in sorted(self.intermediate.items())}
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> TrialRecord:
        """A record from its file's text."""
        data = json.loads(text)
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        data["intermediate"] = {int(k): float(v) for k, v in data.get("intermediate", {}).items()}
        return cls(**data)

    def replace(self, **changes: Any) -> TrialRecord:  # noqa: ANN401
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)
