"""What the routing steps take: the fine-tuning mode (no numpy, no kfp)."""

from __future__ import annotations

from tbpipe.components.common.params import Param, ParamGroup

#: ``--finetune``: ``auto`` fine-tunes when evaluation misses the accuracy target or
#: check-data found the data drifted from the champion's.
FINETUNE_MODES = ("auto", "always", "never")

PARAMS = ParamGroup("decide-finetune", (
    Param("finetune", "whether to fine-tune: auto (when the accuracy target is missed or "
                      "check-data finds the data drifted from the --promote-to champion's), "
                      "always or never", type=str, default=FINETUNE_MODES[0],
          choices=FINETUNE_MODES),
))
