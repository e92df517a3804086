"""TensorBoard's frontend without TensorFlow: ``python tensorboard_frontend.py ARGS``.

Run as a script by :func:`tbpipe.pipelines.runners.tensorboard.tensorboard_command`, so its
process imports TensorBoard and nothing of tbpipe (not even kfp): every start is seconds
sooner (docs/performance.md, section 5).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: What TensorBoard prints where TensorFlow cannot be imported. tbpipe blocks it on purpose,
#: and nothing tbpipe logs needs it (scalars, images, histograms, text, PR curves, HParams).
NO_TENSORFLOW_NOTICE = "TensorFlow installation not found"


class DropNotice:
    """A stderr that drops TensorBoard's "TensorFlow installation not found" line.

    TensorBoard prints it with ``print(..., file=sys.stderr)``: the text, then a newline.
    """

    def __init__(self, stream) -> None:  # noqa: ANN001 - a text stream
        self.stream, self._dropping = stream, False

    def write(self, text: str) -> int:
        """Pass ``text`` on unless it is the notice (or the newline ending it)."""
        if text.startswith(NO_TENSORFLOW_NOTICE):
            self._dropping = not text.endswith("\n")
            return len(text)
        if self._dropping and text == "\n":
            self._dropping = False
            return len(text)
        self._dropping = False
        return self.stream.write(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def serve_without_tensorflow(argv: Sequence[str]) -> None:
    """Run TensorBoard (either loader, per ``--load_fast`` in ``argv``) with TensorFlow blocked.

    Without TensorFlow the process starts seconds sooner, and the Python loader reads every
    scheme but s3:// through fsspec (``gs://`` through gcsfs, which reaches an emulator too;
    ``az://`` through adlfs; any installed fsspec implementation), listing afresh at each
    reload. ``tensorboard.compat.notf`` is TensorBoard's own switch for "run without
    TensorFlow"; blocking the ``tensorflow`` import as well keeps any plugin from loading it
    anyway.
    """
    import types

    sys.modules["tensorflow"] = None  # type: ignore[assignment] - makes `import` fail
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    import fsspec

    logdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--logdir=")), "")
    protocol = logdir.split("://", 1)[0].lower() if "://" in logdir else ""
    for name in {"gs", protocol} - {""}:  # a run grows while watched: list afresh
        fsspec.config.conf.setdefault(name, {})["use_listings_cache"] = False
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        fsspec.config.conf["gs"].setdefault("token", "anon")
        # gcsfs would first ask the Storage Control gRPC API (absent on an emulator).
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from tensorboard.main import run_main

    sys.argv = ["tensorboard", *argv]
    sys.stderr = DropNotice(sys.stderr)
    run_main()


if __name__ == "__main__":
    serve_without_tensorflow(sys.argv[1:])
