"""The finetune step, as placement, the runners and the warm worker know it."""

from tbpipe.components.common.step_info import Step
from tbpipe.components.finetuning.config import PARAMS

STEP = Step(
    name="finetune", display_names=("finetune",), order=50, tensorflow=True, gpu=True,
    cpu=("3", "6"), memory=("8Gi", "12Gi"),
    preload=("tbpipe.components.finetuning.core",),
    params=PARAMS)
