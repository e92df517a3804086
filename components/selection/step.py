"""The routing steps, as tbpipe knows them.

decide-finetune, select-model, select-trial, and a search's suggest and select-tuned.
"""

from tbpipe.components.common.step_info import Step
from tbpipe.components.selection.config import PARAMS

STEP = Step(
    name="select", display_names=("decide-finetune", "select-model", "select-trial", "suggest",
                                   "select-tuned"),
    order=40, cpu=("250m", "1"), memory=("512Mi", "1Gi"),
    params=PARAMS)
