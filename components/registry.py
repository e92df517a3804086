"""The steps of tbpipe's pipeline, as each declares itself in ``components/<step>/step.py``.

A step folder with a ``step.py`` holding ``STEP`` (a
:class:`~tbpipe.components.common.step_info.Step`) is a step: placement, the warm worker's
preload, the runners' pre-flight checks, the run display and the table of pipeline
parameters read it from here. Adding a step is its folder plus its place in the DAG
(``tbpipe.pipelines.training``). Reading the registry imports each ``step.py`` and its
``config.py`` only: no kfp, numpy or TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from types import MappingProxyType

from tbpipe.components.common.params import Param, ParamGroup
from tbpipe.components.common.run_place import PARAMS as RUN_PLACE_PARAMS
from tbpipe.components.common.step_info import Step


@functools.cache
def steps() -> tuple[Step, ...]:
    """Every step, in DAG order (``Step.order``)."""
    import tbpipe.components as package

    found = []
    for module in pkgutil.iter_modules(package.__path__):
        if not module.ispkg or module.name.startswith("_") or module.name == "common":
            continue
        try:
            declared = importlib.import_module(f"{package.__name__}.{module.name}.step")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package.__name__}.{module.name}.step":
                raise
            continue
        found.append(dataclasses.replace(declared.STEP,
                                         package=f"{package.__name__}.{module.name}"))
    return tuple(sorted(found, key=lambda step: step.order))


def tensorflow_packages() -> tuple[str, ...]:
    """The packages of the steps that import TensorFlow (the warm worker waits for those)."""
    return tuple(step.package for step in steps() if step.tensorflow)


@functools.cache
def steps_by_display_name() -> MappingProxyType:
    """Task display name (``evaluate-finetuned``) -> its Step."""
    return MappingProxyType({name: step for step in steps() for name in step.display_names})


def step_named(display_name: str) -> Step:
    """The Step a task's display name belongs to; ValueError for a name no step declares."""
    try:
        return steps_by_display_name()[display_name]
    except KeyError:
        raise ValueError(f"no placement for step {display_name!r}: add it to a step's "
                         f"display_names ({', '.join(steps_by_display_name())})") from None


@functools.cache
def param_groups() -> tuple[ParamGroup, ...]:
    """The run place's parameters, then each step's, in DAG order."""
    return (RUN_PLACE_PARAMS, *(step.params for step in steps() if step.params))


@functools.cache
def param_table() -> MappingProxyType:
    """Every pipeline parameter by name, each declared once (TypeError if twice)."""
    table: dict[str, Param] = {}
    for group in param_groups():
        for param in group.params:
            if param.name in table:
                raise TypeError(f"pipeline parameter {param.name!r} is declared twice")
            table[param.name] = param
    return MappingProxyType(table)
