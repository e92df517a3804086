"""``--output text|json`` for every sub-command that has a result, the way kfp and kubectl do.

With ``--output json`` standard output holds exactly one JSON object and nothing else:
:func:`result_output` sends everything else a command prints to standard error, and
:func:`emit` writes the object at the end. Text output is unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from typing import TextIO

OUTPUT_FORMATS = ("text", "json")


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``-o/--output text|json``."""
    parser.add_argument("-o", "--output", choices=OUTPUT_FORMATS, default="text",
                        help="text (default) or json: one JSON object on standard output, "
                             "everything else on standard error")


def wants_json(args: argparse.Namespace) -> bool:
    """Whether ``--output json`` was asked for."""
    return getattr(args, "output", "text") == "json"


@contextlib.contextmanager
def result_output(args: argparse.Namespace) -> Iterator[TextIO]:
    """Yield the stream the result goes to; under ``--output json`` the rest goes to stderr.

    Inside the block ``print`` (and anything writing to ``sys.stdout``) reaches standard
    error when JSON is asked for, so standard output keeps only what :func:`emit` writes.
    """
    out = sys.stdout
    if not wants_json(args):
        yield out
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield out


def emit(stream: TextIO, result: dict) -> None:
    """Write ``result`` as one JSON object (one line) to ``stream``."""
    stream.write(json.dumps(result, sort_keys=True, default=str) + "\n")
    stream.flush()


def tbpipe_command() -> str:
    """The ``tbpipe`` command as it can be typed here, for the "next step" lines.

    ``tbpipe`` where the running one is on the PATH; else the path of the running
    ``tbpipe`` script (a venv not activated); else ``python -m tbpipe.pipelines.cli``.
    """
    script = os.path.join(os.path.dirname(sys.executable), "tbpipe")
    found = shutil.which("tbpipe")
    if found and os.path.exists(script) and os.path.samefile(found, script):
        return "tbpipe"
    if os.path.exists(script):
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m tbpipe.pipelines.cli"
