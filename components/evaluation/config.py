"""Settings of the evaluate step, checked once when built, and what it returns (no numpy)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.limits import check_count, check_finite
from tbpipe.components.common.params import Param, ParamGroup

if TYPE_CHECKING:
    from tbpipe.components.evaluation.metrics import ClassScores


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """Settings of the evaluate step.

    Attributes:
        accuracy_target: The accuracy in [0, 1] the model must reach to "meet the target".
        batch_size: Examples per prediction batch.
        tensorboard_url: The TensorBoard the report links to.
        run_label: ``{experiment}/{run}``, used to filter the TensorBoard link to this run.

    """

    accuracy_target: float = 0.95
    batch_size: int = 256
    tensorboard_url: str = "http://127.0.0.1:6006"
    run_label: str = ""

    def __post_init__(self) -> None:
        """InputError for an accuracy target outside [0, 1] (or not finite), a bad batch size."""
        if not 0.0 <= check_finite("accuracy_target", self.accuracy_target) <= 1.0:
            raise SettingError("accuracy_target", self.accuracy_target,
                               "outside [0, 1]; pass a fraction such as 0.95")
        check_count("batch_size", self.batch_size)


PARAMS = ParamGroup("evaluate", (
    Param("accuracy_target", "the test accuracy in [0, 1] that counts as good enough "
                             "(--finetune auto fine-tunes below it)"),
    Param("tensorboard_url", "the TensorBoard the reports and the run's summary link to"),
), config=EvaluateConfig)


@dataclasses.dataclass(frozen=True)
class EvaluateResult:
    """What the evaluation found."""

    loss: float
    accuracy: float
    accuracy_target: float
    meets_target: bool
    num_examples: int
    per_class: tuple[ClassScores, ...]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion_matrix: list[list[int]]
    class_names: tuple[str, ...] = ()  # the test Dataset's, else the model's; () means str(k)

    @property
    def names(self) -> tuple[str, ...]:
        """The name of each class: ``class_names`` if it names them all, else ``str(k)``."""
        k = len(self.confusion_matrix)
        return self.class_names if len(self.class_names) == k else tuple(map(str, range(k)))

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics (``meets_target`` as 0/1) for KFP Metrics artifacts."""
        names = ("loss", "accuracy", "macro_precision", "macro_recall", "macro_f1",
                 "meets_target", "num_examples")
        return {name: float(getattr(self, name)) for name in names}
