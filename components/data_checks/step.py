"""The check-data step, as placement, the runners and the warm worker know it."""

from tbpipe.components.common.step_info import Step
from tbpipe.components.data_checks.config import PARAMS

STEP = Step(
    name="check-data", display_names=("check-data",), order=15,
    tensorflow=True,  # the champion's embeddings, for the drift test
    cpu=("1", "2"), memory=("2Gi", "4Gi"),
    preload=("tbpipe.components.data_checks.core",),
    params=PARAMS)
