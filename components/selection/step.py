"""The routing steps (decide-finetune, select-model, select-trial), as tbpipe knows them."""

from tbpipe.components.common.step_info import Step
from tbpipe.components.selection.config import PARAMS

STEP = Step(
    name="select", display_names=("decide-finetune", "select-model", "select-trial"),
    order=40, cpu=("250m", "1"), memory=("512Mi", "1Gi"),
    params=PARAMS)
