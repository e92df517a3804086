"""The train step, as placement, the runners and the warm worker know it."""

from __future__ import annotations

from collections.abc import Mapping

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.step_info import Step
from tbpipe.components.training.config import FORMS, PARAMS, ModelSpec


def check_model(values: Mapping[str, object], local: bool) -> None:
    """InputError unless the model ``--model`` names can be reached from here.

    A local run needs the file, ``.keras`` file or Model folder (local or a URL) to exist;
    a cluster run reads a ``file.py:function`` spec's file here (it travels as text).
    """
    from tbpipe.components.common.storage import exists

    spec = ModelSpec(values["model"])
    if local and spec.kind in ("keras", "folder", "file") and not exists(spec.target):
        what = {"keras": "no such .keras file", "folder": "no such Model folder",
                "file": "no such Python file"}[spec.kind]
        raise InputError(f"--model {spec}: {what}; use {FORMS}")
    if not local:
        spec.read_source()


STEP = Step(
    name="train", display_names=("train",), order=20, tensorflow=True, gpu=True,
    # fits a GKE n1-standard-4 + T4 node (about 3.9 CPU / 12 GiB allocatable)
    cpu=("3", "6"), memory=("8Gi", "12Gi"),
    preflight=check_model, preflight_params=("model",),
    preload=("tbpipe.components.training.fit", "tbpipe.components.training.data",
             "tbpipe.components.training.model", "tbpipe.components.training.checkpoint",
             "tbpipe.components.training.user_model",
             "tbpipe.components.common.tensorboard.writer",
             "tbpipe.components.training.tensorboard_callback"),
    params=PARAMS)
