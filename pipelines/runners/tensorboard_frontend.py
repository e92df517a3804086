"""TensorBoard's frontend without TensorFlow: ``python tensorboard_frontend.py ARGS``.

Run as a script by :func:`tbpipe.pipelines.runners.tensorboard.tensorboard_command`, so its
process imports TensorBoard and nothing of tbpipe (not even kfp): every start is seconds
sooner (docs/performance.md, section 5).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def serve_without_tensorflow(argv: Sequence[str]) -> None:
    """Run TensorBoard (either loader, per ``--load_fast`` in ``argv``) with TensorFlow blocked.

    Without TensorFlow the process starts seconds sooner, and the Python loader reads gs://
    through gcsfs (which reaches an emulator too). ``tensorboard.compat.notf`` is
    TensorBoard's own switch for "run without TensorFlow"; blocking the ``tensorflow`` import
    as well keeps any plugin from loading it anyway.
    """
    import types

    sys.modules["tensorflow"] = None  # type: ignore[assignment] - makes `import` fail
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    import fsspec

    gs_options = fsspec.config.conf.setdefault("gs", {})
    gs_options["use_listings_cache"] = False  # a run grows while watched: list afresh
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        gs_options.setdefault("token", "anon")
        # gcsfs would first ask the Storage Control gRPC API (absent on an emulator).
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from tensorboard.main import run_main

    sys.argv = ["tensorboard", *argv]
    run_main()


if __name__ == "__main__":
    serve_without_tensorflow(sys.argv[1:])
