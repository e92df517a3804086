"""Settings of the promote step, checked once when built, and its decision (no numpy)."""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.errors import InputError, SettingError
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
        gate: A gate's YAML text (docs/gate.md); empty: the gate ``promotion_metric`` and
            ``min_improvement`` stand for (``gate.shorthand_gate``).
        reason: Why a promotion is forced (required with ``force_promote``; recorded).
        mlflow_uri: An MLflow tracking server each promotion also registers a version in.
        inference_service: A KServe InferenceService (``NAMESPACE/NAME``) each promotion
            points at the new champion (``inference_service.follow``).

    """

    promotion_metric: str = "accuracy"
    min_improvement: float = 0.0
    force_promote: bool = False
    batch_size: int = 256
    run_label: str = ""
    gate: str = ""
    reason: str = ""
    mlflow_uri: str = ""
    inference_service: str = ""

    def __post_init__(self) -> None:
        """SettingError for a bad setting, a force without a reason; GateError for a bad gate.

        A gate given with the shorthands (a metric or an improvement) is a SettingError too.
        """
        if self.promotion_metric not in PROMOTION_METRICS:
            raise SettingError("promotion_metric", self.promotion_metric,
                               f"must be one of {', '.join(PROMOTION_METRICS)}")
        if not 0.0 <= check_finite("min_improvement", self.min_improvement) < 1.0:
            raise SettingError("min_improvement", self.min_improvement,
                               "outside [0, 1); pass a fraction such as 0.01")
        if self.force_promote and not self.reason.strip():
            raise SettingError("force_promote", self.force_promote,
                               "needs --reason TEXT (why; the registry records it)")
        if self.gate and (self.min_improvement or self.promotion_metric != "accuracy"):
            raise SettingError("gate", "(a gate file)", "give --gate or --promotion-metric/"
                               "--min-improvement (shorthands for a gate), not both")
        from tbpipe.components.promotion.mlflow_registry import TRACKING_SCHEMES

        if self.mlflow_uri and not self.mlflow_uri.startswith(TRACKING_SCHEMES):
            raise SettingError("mlflow_uri", self.mlflow_uri,
                               "must be an MLflow tracking server, http(s)://HOST:PORT")
        if self.inference_service:
            from tbpipe.components.promotion.inference_service import ServiceRef

            try:
                ServiceRef.parse(self.inference_service)
            except InputError:
                raise SettingError("inference_service", self.inference_service,
                                   "must be NAMESPACE/NAME of a KServe InferenceService, e.g. "
                                   "models/tbpipe-classifier") from None
        self.rules()  # a bad gate is refused here, one line per error

    def rules(self):  # noqa: ANN201 - gate.Gate (imported inside: yaml only when needed)
        """The gate this promotion applies: ``gate`` parsed, else the shorthand's."""
        from tbpipe.components.promotion.gate import parse_gate, shorthand_gate

        if self.gate:
            return parse_gate(self.gate, "--gate")
        return shorthand_gate(self.promotion_metric, self.min_improvement)


def read_gate_file(uri: str) -> str:
    """The text of the gate file ``uri`` (local or any store), read and checked at the edge.

    ``gate.parse_gate`` checks it once here; the text travels to the promote step.

    A value holding a newline is a gate's text already (a path never does) and is only
    checked.

    Raises:
        InputError: the file cannot be read; GateError: it is not a valid gate.

    """
    from tbpipe.components.common import storage
    from tbpipe.components.common.errors import StorageError
    from tbpipe.components.promotion.gate import parse_gate

    if "\n" in uri:
        text = uri
    else:
        try:
            text = storage.read_bytes(uri).decode("utf-8")
        except (StorageError, OSError, UnicodeDecodeError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"--gate {uri}: cannot read it ({why}); pass a YAML gate file "
                             "(docs/gate.md)") from None
    parse_gate(text, f"--gate {uri}" if "\n" not in uri else "--gate")
    return text


def check_promote_params(values: dict) -> None:
    """The flags that mean nothing without ``--promote-to``: SettingError if one is alone.

    ``--baseline-model``, ``--force-promote``, ``--gate``, ``--mlflow-uri``,
    ``--inference-service``.
    """
    for needs_target in ("baseline_model", "force_promote", "gate", "mlflow_uri",
                         "inference_service"):
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
    Param("force_promote", "promote whatever the gate says (needs --reason; recorded)"),
    Param("gate", "a gate file (YAML, docs/gate.md): what the model must meet to be "
                  "promoted; read where tbpipe runs, its text travels to the promote step; "
                  "default: --promotion-metric must improve by more than --min-improvement"),
    Param("reason", "why --force-promote (recorded in the registry)"),
    Param("mlflow_uri", "also register each promotion in this MLflow tracking server "
                        "(http://HOST:PORT; pip install 'tbpipe[mlflow]')"),
    Param("inference_service", "a KServe InferenceService (NAMESPACE/NAME) each promotion "
                               "points at the new champion (deploy/kserve/README.md)"),
), config=PromoteConfig, check=check_promote_params)


@dataclasses.dataclass(frozen=True)
class PromotionDecision:
    """What the promote step decided, and on which scores.

    Attributes:
        promoted: Whether the new model was copied to ``promote_to``.
        reason: Why, in words: the gate's summary (``gate failed: accuracy ...``), forced...
        metric: The metric compared.
        new_scores: The new model's ``accuracy`` and ``macro_f1`` on the test split.
        baseline_scores: The baseline's, or None when there was none.
        baseline_uri: Where the baseline came from ("" when there was none).
        forced: Whether ``force`` decided it.
        version: The production version the new model became (``v3``); "" when kept.
        blessing: The gate's blessing (``Blessing.as_dict()``), passed or not.

    """

    promoted: bool
    reason: str
    metric: str
    new_scores: dict[str, float]
    baseline_scores: dict[str, float] | None
    baseline_uri: str
    forced: bool = False
    version: str = ""
    blessing: dict | None = None

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
