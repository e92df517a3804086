"""Settings of the finetune step, checked once when built. No TensorFlow here."""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.limits import check_count
from tbpipe.components.common.params import Param, ParamGroup
from tbpipe.components.training.config import FitConfig


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(FitConfig):
    """Settings of the finetune step: FitConfig's, with fewer epochs and a lower rate.

    Attributes:
        epochs: Further passes over the (possibly different) training data.
        learning_rate: Adam's learning rate, usually well below the training one.
        freeze_layers: How many of the first layers keep their weights (0: none).

    """

    epochs: int = 3
    learning_rate: float = 1e-4
    freeze_layers: int = 0

    def __post_init__(self) -> None:
        """FitConfig's checks, and freeze_layers (checked against the model when it loads)."""
        super().__post_init__()
        check_count("freeze_layers", self.freeze_layers, low=0)


PARAMS = ParamGroup("finetune", (
    Param("finetune_epochs", "passes of fine-tuning", field="epochs"),
    Param("finetune_learning_rate", "Adam's learning rate when fine-tuning",
          field="learning_rate"),
    Param("freeze_layers", "how many of the first layers keep their weights when "
                           "fine-tuning (0: none)"),
), config=FinetuneConfig)
