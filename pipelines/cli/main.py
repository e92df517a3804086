"""``tbpipe``: compile | run | submit | tensorboard | runs | build-images | predict | completion.

Each sub-command is a module of this package with ``register(subparsers)``; the pipeline's
parameters are declared once (``PipelineParams``) and turned into flags by
:mod:`tbpipe.pipelines.cli.flags`.
"""

from __future__ import annotations

import argparse
import sys

from tbpipe.components._image import package_version
from tbpipe.components.common.errors import TbpipeError
from tbpipe.pipelines.cli import (
    build_images,
    compile,
    completion,
    models,
    predict,
    run,
    runs,
    submit,
    tensorboard,
)

COMMANDS = (compile, run, submit, tensorboard, runs, models, build_images, predict, completion)
#: What ``tbpipe --help`` says first (plain text: argparse shows it as it is).
DESCRIPTION = ("Train, evaluate and fine-tune a Keras model as a Kubeflow pipeline, locally "
               "or on a cluster, every step in one TensorBoard.")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``tbpipe: error: ...`` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full ``tbpipe`` parser."""
    parser = Parser(prog="tbpipe", description=DESCRIPTION,
                    epilog="Run 'tbpipe COMMAND --help' for a command's flags. Exit status: 0 "
                           "done, 1 error (one line on standard error), 2 usage error; "
                           "submit --wait: 3 the run failed, 4 --timeout reached.")
    parser.add_argument("--version", action="version", version=f"tbpipe {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(subparsers)
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
