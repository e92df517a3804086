"""``tbpipe compile``: write the KFP v2 pipeline YAML (needs no TensorFlow)."""

from __future__ import annotations

import argparse

from tbpipe.pipelines.cli.flags import (
    add_compile_arguments,
    add_sweep_arguments,
    compile_options,
    sweep_from_args,
)
from tbpipe.pipelines.training import compile_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compile``."""
    cmd = subparsers.add_parser("compile", help="write the KFP v2 pipeline YAML")
    cmd.add_argument("-o", "--output", default="pipeline.yaml", help="YAML path to write")
    add_compile_arguments(cmd)
    add_sweep_arguments(cmd)
    cmd.set_defaults(handler=run_compile)


def run_compile(args: argparse.Namespace) -> int:
    """Compile with the placement (and sweep) flags and say where the YAML went."""
    path = compile_pipeline(args.output, compile_options(args), sweep_from_args(args))
    print(f"wrote {path}")
    return 0
