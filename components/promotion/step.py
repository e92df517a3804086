"""The promote step, as placement, the runners and the warm worker know it."""

from __future__ import annotations

from collections.abc import Mapping

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.step_info import Step
from tbpipe.components.promotion.config import PARAMS


def check_promotion(values: Mapping[str, object], local: bool) -> None:
    """InputError unless the baseline exists and ``--promote-to`` can hold the model (local).

    The target may not be the log root or inside it (``values["log_root"]``, resolved).
    """
    if not local:
        return
    from tbpipe.components.common.storage import exists

    baseline, target = str(values["baseline_model"]), str(values["promote_to"])
    if baseline and not exists(baseline):
        raise InputError(f"--baseline-model {baseline}: no such file, folder or object; pass "
                         "a tbpipe Model folder or a .keras file")
    if target:
        from tbpipe.components.promotion.publish import check_target

        check_target(target, str(values["log_root"]))


STEP = Step(
    name="promote", display_names=("promote",), order=60, tensorflow=True,
    resources_of="evaluate",  # it scores two models as evaluate does
    preflight=check_promotion, preflight_params=("baseline_model", "promote_to"),
    params=PARAMS)
