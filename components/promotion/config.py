"""Settings of the promote step, checked once when built, and its decision (no numpy)."""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.limits import check_finite
from tbpipe.components.common.params import Param, ParamGroup

#: The metrics a promotion may compare, as the evaluate step names them.
PROMOTION_METRICS = ("accuracy", "macro_f1")
PROMOTED, KEPT = "promoted", "kept baseline"


@dataclasses.dataclass(frozen=True)
class PromoteConfig:
    """Settings of the promote step.

    Attributes:
        promotion_metric: What the new model and the baseline are compared on
            (PROMOTION_METRICS).
        min_improvement: How much the new model must beat the baseline by, in [0, 1).
        force_promote: Promote whatever the scores (the decision says so).
        batch_size: Examples per prediction batch when scoring.
        run_label: ``{experiment}/{run}``, recorded in ``promotion.json``.

    """

    promotion_metric: str = "accuracy"
    min_improvement: float = 0.0
    force_promote: bool = False
    batch_size: int = 256
    run_label: str = ""

    def __post_init__(self) -> None:
        """SettingError for an unknown metric or an improvement outside [0, 1)."""
        if self.promotion_metric not in PROMOTION_METRICS:
            raise SettingError("promotion_metric", self.promotion_metric,
                               f"must be one of {', '.join(PROMOTION_METRICS)}")
        if not 0.0 <= check_finite("min_improvement", self.min_improvement) < 1.0:
            raise SettingError("min_improvement", self.min_improvement,
                               "outside [0, 1); pass a fraction such as 0.01")


def check_promote_params(values: dict) -> None:
    """``--baseline-model`` and ``--force-promote`` mean nothing without ``--promote-to``."""
    for needs_target in ("baseline_model", "force_promote"):
        if values[needs_target] and not values["promote_to"]:
            flag = "--" + needs_target.replace("_", "-")
            raise SettingError(flag, values[needs_target],
                               "needs --promote-to (the folder the winner is copied to)")


PARAMS = ParamGroup("promote", (
    Param("promote_to", "production folder (local, or any store: gs://, s3://, az://...): the "
                        "run's model is copied there only if it beats the baseline; default: "
                        "no promotion", type=str, default="", local_path=True),
    Param("baseline_model", "the model to beat (Model folder or .keras); default: what "
                            "--promote-to holds", type=str, default="", local_path=True),
    Param("min_improvement", "how much the new model must beat the baseline by, in [0, 1)"),
    Param("promotion_metric", "what the new model and the baseline are compared on",
          choices=PROMOTION_METRICS),
    Param("force_promote", "promote whatever the scores (the decision says so)"),
), config=PromoteConfig, check=check_promote_params)


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """What the promote step decided, and on which scores.

    Attributes:
        promoted: Whether the new model was copied to ``promote_to``.
        reason: Why, in words (``beats the baseline by 0.0123 >= 0``, ``forced``, ...).
        metric: The metric compared.
        new_scores: The new model's ``accuracy`` and ``macro_f1`` on the test split.
        baseline_scores: The baseline's, or None when there was none.
        baseline_uri: Where the baseline came from ("" when there was none).
        forced: Whether ``force`` decided it.
        version: The production version the new model became (``v3``); "" when kept.

    """

    promoted: bool
    reason: str
    metric: str
    new_scores: dict[str, float]
    baseline_scores: dict[str, float] | None
    baseline_uri: str
    forced: bool = False
    version: str = ""

    @property
    def verdict(self) -> str:
        """``promoted`` or ``kept baseline``."""
        return PROMOTED if self.promoted else KEPT

    def line(self) -> str:
        """The one line the CLI and the report show, with both scores."""
        new = self.new_scores[self.metric]
        base = ("none" if self.baseline_scores is None
                else f"{self.baseline_scores[self.metric]:.4f}")
        return (f"{self.verdict}: new {self.metric} {new:.4f} vs baseline {base} "
                f"({self.reason})")

    def as_dict(self) -> dict:
        """The decision as JSON-ready values (the run summary's ``promotion``)."""
        return {"decision": self.verdict, **dataclasses.asdict(self), "line": self.line()}
