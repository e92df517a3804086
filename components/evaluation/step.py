"""The evaluate step (it runs twice: the trained and the fine-tuned model), as tbpipe knows it."""

from tbpipe.components.common.step_info import Step
from tbpipe.components.evaluation.config import PARAMS

STEP = Step(
    name="evaluate", display_names=("evaluate", "evaluate-finetuned"), order=30,
    tensorflow=True, cpu=("1", "2"), memory=("2Gi", "4Gi"),
    preload=("tbpipe.components.evaluation.core",),
    params=PARAMS)
