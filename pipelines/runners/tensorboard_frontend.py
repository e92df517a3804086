"""TensorBoard's frontend without TensorFlow: ``python tensorboard_frontend.py ARGS``.

Run as a script by :func:`tbpipe.pipelines.runners.tensorboard.tensorboard_command`, so its
process imports TensorBoard and nothing of tbpipe (not even kfp): every start is seconds
sooner (docs/performance.md, section 5).
"""

from __future__ import annotations

import importlib.util
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
    scheme through fsspec (``s3://`` through s3fs, see :func:`configure_file_access`;
    ``gs://`` through gcsfs, which reaches an emulator too; ``az://`` through adlfs; any
    installed fsspec implementation), listing afresh at each reload.
    ``tensorboard.compat.notf`` is TensorBoard's own switch for "run without TensorFlow";
    blocking the ``tensorflow`` import as well keeps any plugin from loading it
    anyway.
    """
    import types

    sys.modules["tensorflow"] = None  # type: ignore[assignment] - makes `import` fail
    sys.modules["tensorboard.compat.notf"] = types.ModuleType("tensorboard.compat.notf")
    logdir = next((a.split("=", 1)[1] for a in argv if a.startswith("--logdir=")), "")
    configure_file_access(logdir)
    from tensorboard.main import run_main

    sys.argv = ["tensorboard", *argv]
    sys.stderr = DropNotice(sys.stderr)
    run_main()


def configure_file_access(logdir: str) -> None:
    """Set how TensorBoard's file layer reads ``logdir``'s store (in this process only).

    Listings are never cached (a run grows while watched). ``s3://`` goes through fsspec
    (s3fs: one client, pooled connections) where s3fs is installed, instead of TensorBoard's
    own S3 reader, which builds a new boto3 client for every call (about 10 ms of CPU each, six
    calls a step folder: what made the time to serve a root grow with its runs;
    docs/performance.md section 8b). The endpoint comes from ``AWS_ENDPOINT_URL``, or from
    ``S3_ENDPOINT`` (TensorBoard's name for it) where only that is set.
    """
    import fsspec

    protocol = logdir.split("://", 1)[0].lower() if "://" in logdir else ""
    for name in {"gs", protocol} - {""}:  # a run grows while watched: list afresh
        fsspec.config.conf.setdefault(name, {})["use_listings_cache"] = False
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        fsspec.config.conf["gs"].setdefault("token", "anon")
        # gcsfs would first ask the Storage Control gRPC API (absent on an emulator).
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    if protocol in ("s3", "s3a") and importlib.util.find_spec("s3fs") is not None:
        if os.environ.get("S3_ENDPOINT") and not os.environ.get("AWS_ENDPOINT_URL"):
            os.environ["AWS_ENDPOINT_URL"] = os.environ["S3_ENDPOINT"]
        from tensorboard.compat.tensorflow_stub.io import gfile

        gfile.register_filesystem(protocol, gfile.FSSpecFileSystem())


if __name__ == "__main__":
    serve_without_tensorflow(sys.argv[1:])
