"""``tbpipe tensorboard``: one TensorBoard over every run and step under a log root."""

from __future__ import annotations

import argparse

from tbpipe.components.common.sigterm import on_sigterm
from tbpipe.pipelines.runners.local import DEFAULT_LOG_ROOT
from tbpipe.pipelines.runners.tensorboard import LOADERS, start_tensorboard


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tensorboard``."""
    cmd = subparsers.add_parser(
        "tensorboard", help="serve TensorBoard on a log root",
        usage="%(prog)s [options] [-- TENSORBOARD_FLAGS ...]",
        description="Serve one TensorBoard over every run and step under a log root. Flags "
                    "after -- go to TensorBoard as they are, e.g. "
                    "-- --samples_per_plugin=scalars=5000 (see tensorboard --helpfull).")
    cmd.add_argument("--log-root", default=DEFAULT_LOG_ROOT,
                     help="local folder, gs://bucket/prefix or s3://bucket/prefix "
                          "(default: %(default)s)")
    cmd.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    cmd.add_argument("--port", type=int, default=6006, help="port (default: %(default)s)")
    cmd.add_argument("--loader", choices=LOADERS, default="auto",
                     help="fast (native data server), python, or auto: fast where it can read")
    cmd.add_argument("--reload-interval", type=float, default=5,
                     help="seconds between reloads (default: %(default)s)")
    cmd.add_argument("tensorboard_args", nargs="*", metavar="TENSORBOARD_FLAGS",
                     help="after --: TensorBoard's own flags, passed through")
    cmd.set_defaults(handler=run_tensorboard)


def run_tensorboard(args: argparse.Namespace) -> int:
    """``tbpipe tensorboard``: start, print the address and the loader, serve until stopped."""
    server = start_tensorboard(args.log_root, args.host, args.port, args.loader,
                               args.reload_interval, extra_args=args.tensorboard_args)
    print(f"TensorBoard {server.url} serving {args.log_root}", flush=True)
    print(f"loader: {server.loader.name} ({server.loader.reason})", flush=True)
    with on_sigterm(server.process.terminate):
        try:
            return server.process.wait()
        except KeyboardInterrupt:
            server.stop()
            raise
