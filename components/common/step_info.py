"""What a step declares about itself for the rest of tbpipe (``components/<step>/step.py``).

Placement, the warm worker, the runners and the run display read these declarations through
:mod:`tbpipe.components.registry`; none keeps a table of steps of its own. No kfp here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from tbpipe.components.common.params import ParamGroup

#: ``(request, limit)`` of CPU and of memory (Kubernetes quantities).
Quantities = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Step:
    """A step of tbpipe's pipeline, as the rest of tbpipe needs to know it.

    Attributes:
        name: The step's kind: its resource profile and the ``--cpu``/``--memory`` key
            (``train``, ``evaluate``, ``select``).
        display_names: The task names it appears under in the DAG (``evaluate``,
            ``evaluate-finetuned``): placement, the run display and ``tbpipe run``'s lines.
        order: Its place in the DAG, for listings (the docs table, ``--help``).
        tensorflow: Whether it imports TensorFlow (the warm worker waits for its preload).
        gpu: Whether it gets the GPU image and GPUs when the pipeline is compiled with GPUs
            (its retries and caching follow the training steps').
        cpu: Default ``(request, limit)`` of CPU; empty: ``resources_of``'s profile.
        memory: Default ``(request, limit)`` of memory; empty: ``resources_of``'s profile.
        resources_of: The kind whose resources it shares ('': its own, ``cpu``/``memory``).
        preflight: What ``tbpipe run``/``submit`` check before starting: called with every
            pipeline parameter's value by name and ``local`` (True for ``tbpipe run``: local
            paths exist and can be read; False for a cluster run: what must be read here);
            raises InputError (one line).
        preflight_params: The parameters ``preflight`` reads (a sweep checks each of their
            swept values).
        preload: Modules the local warm worker imports before forking this step.
        params: The pipeline parameters the step owns (its ``config.PARAMS``).
        package: The step's package (``tbpipe.components.training``); the registry fills it
            in from where it found the step.

    """

    name: str
    display_names: tuple[str, ...]
    order: int
    tensorflow: bool = False
    gpu: bool = False
    cpu: Quantities | tuple[()] = ()
    memory: Quantities | tuple[()] = ()
    resources_of: str = ""
    preflight: Callable[[Mapping[str, object], bool], None] | None = None
    preflight_params: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()
    params: ParamGroup | None = None
    package: str = ""

    def __post_init__(self) -> None:
        """A step has its own resources or names the kind it shares, not both."""
        if bool(self.cpu and self.memory) == bool(self.resources_of):
            raise TypeError(f"step {self.name}: declare cpu and memory, or resources_of")
