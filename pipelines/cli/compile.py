"""``tbpipe compile``: write the KFP v2 pipeline YAML (needs no TensorFlow)."""

from __future__ import annotations

import argparse
import dataclasses
import os

from tbpipe.pipelines.cli.flags import (
    add_compile_arguments,
    add_sweep_arguments,
    compile_options,
    sweep_from_args,
)
from tbpipe.pipelines.cli.output import add_output_argument, emit, result_output, wants_json
from tbpipe.pipelines.preflight import check
from tbpipe.pipelines.training import PIPELINE_NAME, PipelineParams, compile_pipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compile``."""
    cmd = subparsers.add_parser("compile", help="write the KFP v2 pipeline YAML")
    cmd.add_argument("--package", default="pipeline.yaml", metavar="PATH",
                     help="YAML to write, .yaml or .yml (default: %(default)s); submit "
                          "--package takes it")
    add_output_argument(cmd)
    add_compile_arguments(cmd)
    cmd.add_argument("--workers", type=int, default=None, metavar="N",
                     help="the compiled default of the workers parameter: train and finetune "
                          "over N workers (default: the parameter's, 1)")
    cmd.add_argument("--notify", action="append", default=[], metavar="TARGET",
                     help="compile the exit task that sends the run's outcome here (repeatable; "
                          "the notify parameter's default; see tbpipe run --help)")
    add_sweep_arguments(cmd)
    cmd.set_defaults(handler=run_compile)


def run_compile(args: argparse.Namespace) -> int:
    """Compile with the placement (and sweep) flags and say where the YAML went."""
    with result_output(args) as out:
        sweep = sweep_from_args(args)
        check(PipelineParams(), sweep, local=False)  # a swept model's file is read here
        options = dataclasses.replace(compile_options(args), workers=args.workers,
                                      notify=" ".join(args.notify))
        path = compile_pipeline(args.package, options, sweep)
        if wants_json(args):
            emit(out, {"package": os.path.abspath(path), "pipeline": PIPELINE_NAME})
        else:
            print(f"wrote {path}")
    return 0
