"""The preprocess step, as placement, the runners and the warm worker know it."""

from __future__ import annotations

from collections.abc import Mapping

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.step_info import Step
from tbpipe.components.preprocessing.config import PARAMS


def check_data(values: Mapping[str, object], local: bool) -> None:
    """InputError unless ``--data`` and ``--finetune-data`` exist and can be read (local run).

    Only files, folders and objects are read: a FIFO or a device is refused here. A cluster
    run's data is read by the cluster: nothing is checked here.
    """
    if not local:
        return
    from tbpipe.components.common.regular_files import check_regular
    from tbpipe.components.common.storage import exists, is_remote

    for name in ("data", "finetune_data"):
        uri, flag = str(values[name]), "--" + name.replace("_", "-")
        if not uri or uri.startswith("builtin:"):
            continue
        if not exists(uri):
            raise InputError(f"{flag} {uri}: no such file, folder or object; pass a CSV or "
                             "Parquet table, an MNIST IDX folder, or builtin:digits")
        if not is_remote(uri):
            check_regular(f"{flag} {uri}", uri)


STEP = Step(
    name="preprocess", display_names=("preprocess", "preprocess-finetune-data"), order=10,
    cpu=("1", "2"), memory=("2Gi", "4Gi"),
    preflight=check_data, preflight_params=("data", "finetune_data"),
    params=PARAMS)
