"""The notify step, as tbpipe knows it: the exit task that tells a run's outcome."""

from tbpipe.components.common.step_info import Step
from tbpipe.components.notification.config import PARAMS

STEP = Step(name="notify", display_names=("notify",), order=90, resources_of="select",
            params=PARAMS)
