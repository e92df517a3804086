"""``tbpipe``: compile | run | submit | tensorboard | build-images.

Each sub-command lives in its own module with ``register(subparsers)``; pipeline parameters
are declared once (pipelines/options.py) and shared by compile, run and submit.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from components.common.errors import TbpipeError

COMMAND_MODULES = ("pipelines.commands", "pipelines.submit", "pipelines.images",
                   "pipelines.tensorboard")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``tbpipe: error: ...`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``tbpipe`` parser."""
    parser = Parser(prog="tbpipe", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tbpipe`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except TbpipeError as exc:
        print(f"tbpipe: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tbpipe: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
