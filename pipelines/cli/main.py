"""``tbpipe``: compile | run | submit | schedule | tensorboard | runs | build-images | predict.

And ``completion``, ``workers-manifest`` (the JobSet/TFJob of a multi-worker step).

Each sub-command is a module of this package with ``register(subparsers)``; the pipeline's
parameters are declared once (``PipelineParams``) and turned into flags by
:mod:`tbpipe.pipelines.cli.flags`.
"""

from __future__ import annotations

import argparse
import sys

from tbpipe.components._image import package_version
from tbpipe.components.common.errors import TbpipeError
from tbpipe.components.common.sigterm import EXIT_TERMINATED, Terminated, sigterm_raises
from tbpipe.pipelines.cli import (
    build_images,
    compile,
    completion,
    models,
    predict,
    run,
    runs,
    schedule,
    submit,
    tensorboard,
    workers_manifest,
)

COMMANDS = (compile, run, submit, schedule, tensorboard, runs, models, build_images, predict,
            completion, workers_manifest)
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
                           "done, 1 error (one line on standard error; the traceback of an "
                           "unexpected one goes to the log file it names), 2 usage error; "
                           "submit --wait: 3 the run failed, 4 --timeout reached; 130 "
                           "interrupted (Ctrl-C); 141 standard output closed by its reader; "
                           "143 stopped by SIGTERM.")
    parser.add_argument("--version", action="version", version=f"tbpipe {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


#: Exit statuses (stable; ``tbpipe --help`` lists them).
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130  # 2: usage (Parser.error), 143: EXIT_TERMINATED
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader left


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tbpipe`` console script: every outcome is one line and a status.

    0 done; 1 any error: one ``tbpipe: error: ...`` line on stderr naming the input and the
    cause (for an unexpected one, the traceback goes to a log file the line names: the run's
    log for ``tbpipe run``); 2 usage; 3, 4 ``submit --wait``; 130 Ctrl-C; 141 standard
    output closed by its reader (no line); 143 SIGTERM.
    """
    args = build_parser().parse_args(argv)
    with sigterm_raises():
        try:
            return int(args.handler(args) or 0)
        except Terminated:
            return stopped_by_sigterm(args.command)
        except KeyboardInterrupt:
            print("tbpipe: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except TbpipeError as exc:
            print(f"tbpipe: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except BrokenPipeError as exc:
            if stdout_closed():  # `tbpipe runs | head -1`: the reader has what it wanted
                return EXIT_BROKEN_PIPE
            return unexpected_error(args, exc)
        except Exception as exc:  # noqa: BLE001 - the one exit path for what nobody foresaw
            return unexpected_error(args, exc)


def stdout_closed() -> bool:
    """Whether standard output's reader went away; if so, later writes go to /dev/null.

    A pipe whose reader closed polls as an error. Python would otherwise report the broken
    pipe again when it flushes at exit.
    """
    import os
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):  # no real file, or no poll (Windows)
        return False
    if not any(event & select.POLLERR for _, event in events):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return True


def stopped_by_sigterm(command: str) -> int:
    """Say that ``tbpipe COMMAND`` was stopped by SIGTERM (one line); exit status 143.

    The helpers ``tbpipe run`` started (the warm worker and the steps) are ended on the way
    out (:mod:`tbpipe.pipelines.runners.lifetime`).
    """
    from tbpipe.components.common.errors import traceback_log

    log = traceback_log()
    where = f" (full log: {log})" if log else ""
    after = AFTER_SIGTERM.get(command, "nothing it started is left running")
    print(f"tbpipe {command}: stopped by SIGTERM; {after}{where}", file=sys.stderr, flush=True)
    return EXIT_TERMINATED


#: What ``tbpipe COMMAND: stopped by SIGTERM; ...`` says happened to what the command started.
AFTER_SIGTERM = {
    "run": "its warm worker and steps are stopped too; to continue the run, rerun it with the "
           "same --run-name and --resume",
    "submit": "a run it submitted goes on in the cluster",
    "tensorboard": "TensorBoard is stopped too",
}


def unexpected_error(args: argparse.Namespace, exc: Exception) -> int:
    """One line for an exception no handler foresaw; its traceback in a log file. Status 1."""
    import os

    from tbpipe.components.common.errors import error_line, write_traceback

    folders = {}
    if args.command == "run":
        from tbpipe.pipelines.runners.local import DEFAULT_LOG_ROOT, DEFAULT_PIPELINE_ROOT

        folders = {"the pipeline root (--pipeline-root)":
                   os.path.abspath(getattr(args, "pipeline_root", None)
                                   or DEFAULT_PIPELINE_ROOT),
                   "the log root (--log-root)":
                   os.path.abspath(getattr(args, "log_root", None) or DEFAULT_LOG_ROOT)}
    line = error_line(exc, {k: v for k, v in folders.items() if "://" not in v})
    logged = write_traceback(exc, args.command)
    where = f"traceback in {logged}" if logged else "no room to write the traceback"
    print(f"tbpipe: error: {args.command}: {line} ({where})", file=sys.stderr, flush=True)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
