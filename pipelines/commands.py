"""The ``compile`` and ``run`` sub-commands."""

from __future__ import annotations

import argparse
import glob
import os

from pipelines.options import add_param_arguments, params_from_args
from pipelines.placement import add_compile_arguments, compile_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compile`` and ``run``."""
    compile_cmd = subparsers.add_parser("compile", help="write the KFP v2 pipeline YAML")
    compile_cmd.add_argument("-o", "--output", default="pipeline.yaml", help="YAML path to write")
    add_compile_arguments(compile_cmd)
    compile_cmd.set_defaults(handler=run_compile)

    run_cmd = subparsers.add_parser("run", help="run the whole pipeline locally (kfp.local)")
    run_cmd.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess")
    run_cmd.add_argument("--pipeline-root", default=None,
                         help="where kfp.local keeps artifacts "
                         "(default: ./tbpipe-runs/pipeline-root)")
    run_cmd.add_argument("--gpus", default=None,
                         help="with --runner docker: GPUs for train/finetune ('all' or a count)")
    add_param_arguments(run_cmd)
    run_cmd.set_defaults(handler=run_local)


def run_compile(args: argparse.Namespace) -> int:
    """``tbpipe compile``: write the YAML; needs no TensorFlow."""
    from pipelines.training import compile_pipeline

    path = compile_pipeline(args.output, compile_options(args))
    print(f"wrote {path}")
    return 0


def run_local(args: argparse.Namespace) -> int:
    """``tbpipe run``: the whole pipeline through kfp.local, then where everything went."""
    from pipelines.local import DEFAULT_PIPELINE_ROOT, run_pipeline

    params = params_from_args(args)
    root = os.path.abspath(args.pipeline_root or DEFAULT_PIPELINE_ROOT)
    runner_options = {"gpus": args.gpus} if args.runner == "docker" else {}
    result = run_pipeline(params, pipeline_root=root, runner=args.runner, **runner_options)
    print_result(result, params)
    return 0


def print_result(result, params) -> None:  # noqa: ANN001
    """The closing lines of a run: accuracies, final model, logs and how to view them."""
    from components.evaluate.report import tensorboard_run_url

    summary = result.summary
    print("")
    for name in ("trained", "finetuned"):
        if name in summary["accuracy"]:
            print(f"test accuracy {summary['accuracy'][name]:.4f} ({name} model)")
    print(f"final model: {summary['final_model']} -> {summary['model_uri']}")
    print(f"artifacts and metrics: {result.job_dir}")
    for report in sorted(glob.glob(os.path.join(result.job_dir, "*", "report"))):
        print(f"evaluation report: {report}")
    print(f"TensorBoard logs: {result.log_dir}")
    print(f"view: tbpipe tensorboard --log-root {params.log_root}")
    print(f"      then open {tensorboard_run_url(params.tensorboard_url, result.label)}")
