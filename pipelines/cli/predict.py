"""``tbpipe predict``: the top classes of image files under a Model folder (needs TensorFlow)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict``."""
    cmd = subparsers.add_parser(
        "predict", help="print the top classes of image files under a model",
        description="Classify image files with a tbpipe Model folder (its saved_model/ if it "
                    "has one): one line per file, 'FILE: class prob, ...'. A file that cannot "
                    "be read (not an image, truncated, more than 2**24 pixels, a folder, a "
                    "FIFO) is one error line on standard error and the others are still "
                    "classified; the exit status is then 1 (0 when every file was "
                    "classified).")
    cmd.add_argument("--model", required=True, metavar="URI",
                     help="a Model folder (local or a store URI: gs://, s3://, az://...), e.g. "
                          "the best_model output")
    cmd.add_argument("--top", type=int, default=3, metavar="N",
                     help="how many classes per file (default: 3)")
    cmd.add_argument("files", nargs="+", metavar="FILE", help="image files (PNG, JPEG, ...)")
    cmd.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Print one line per file; 1 if any file could not be read."""
    import os

    from tbpipe.components.selection.serving import predict_files
    from tbpipe.pipelines.runners.local import tensorflow_log_level

    tensorflow_log_level(os.environ)  # before TensorFlow loads: no CUDA noise among the lines
    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    failed = predict_files(args.model, args.files, top=args.top,
                           emit=lambda line: print(line, flush=True), emit_error=to_stderr)
    return 1 if failed else 0
