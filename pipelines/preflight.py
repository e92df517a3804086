"""What ``tbpipe run`` and ``submit`` check before anything starts: each step's pre-flight.

Every step declares its own check in its ``step.py`` (data readable, model file present,
promotion target writable); :func:`check` runs them all, the same way for every command.
``tbpipe compile`` takes no pipeline parameters: only a sweep's values are checked there,
by its config when the Sweep is built.
"""

from __future__ import annotations

from tbpipe.components.registry import steps
from tbpipe.components.selection.config import TuneConfig
from tbpipe.pipelines.sweep import Sweep


def check(params, sweep: Sweep | TuneConfig | None = None,  # noqa: ANN001
          local: bool = True) -> None:
    """Run every step's pre-flight check on ``params`` (a PipelineParams, validated).

    Args:
        params: The run's parameters.
        sweep: Its sweep: a step's check runs again for each swept value of a parameter
            it reads (each swept ``--model`` must exist too); a ``--tune`` search's ranges
            were checked when it was parsed.
        local: True for ``tbpipe run`` (local paths must exist and be readable); False for
            a cluster run (only what must be read here, such as a model's ``file.py``).

    Raises:
        InputError: one line naming the input and what to do.

    """
    values = params.as_values()
    swept = dict(sweep.axes) if isinstance(sweep, Sweep) else {}  # --tune: checked as parsed
    for step in steps():
        if step.preflight is None:
            continue
        step.preflight(values, local)
        for name in step.preflight_params:
            for value in swept.get(name, ()):
                step.preflight({**values, name: value}, local)
