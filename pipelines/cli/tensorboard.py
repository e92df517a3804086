"""``tbpipe tensorboard``: one TensorBoard over every run and step under a log root."""

from __future__ import annotations

import argparse

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import kubeflow_tensorboard_url, tensorboard_run_url
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
    cmd.add_argument("--log-root", "--logdir", default=DEFAULT_LOG_ROOT,
                     help="local folder or store URI: gs://, s3://, az://bucket/prefix (any scheme "
                          "fsspec knows); --logdir is TensorBoard's spelling, which Kubeflow's "
                          "tensorboard-controller passes (default: %(default)s)")
    cmd.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    cmd.add_argument("--bind_all", dest="host", action="store_const", const="0.0.0.0",
                     help="as TensorBoard's flag: --host 0.0.0.0 (Kubeflow's controller passes it)")
    cmd.add_argument("--port", type=int, default=6006, help="port (default: %(default)s)")
    cmd.add_argument("--loader", choices=LOADERS, default="auto",
                     help="fast: TensorBoard's native data server, on local folders and real "
                          "gs://; mirror: the same on a local mirror of the store, synced "
                          "every reload (s3://, az://, an emulator's gs://, any fsspec "
                          "store); python: TensorBoard's Python loader reading the store "
                          "itself; auto (default): fast where it can read, else mirror, "
                          "else python (no data server installed)")
    cmd.add_argument("--reload-interval", type=float, default=5,
                     help="seconds between reloads, and between syncs of a mirror "
                          "(default: %(default)s)")
    cmd.add_argument("--mirror-dir", default=None, metavar="DIR",
                     help="the mirror loader's folder, kept after exit so that the next start "
                          "fetches only what changed (one folder per log root); default: a "
                          "temporary folder, removed at exit (also --mirror-dir=, which "
                          "clears one given before). With --loader auto it is used where "
                          "auto picks the mirror, and ignored (with a note) elsewhere")
    cmd.add_argument("tensorboard_args", nargs="*", metavar="TENSORBOARD_FLAGS",
                     help="after --: TensorBoard's own flags, passed through")
    kubeflow = cmd.add_argument_group(
        "Kubeflow's TensorBoard (deploy/tensorboard/overlays/kubeflow): print its address, "
        "start nothing")
    kubeflow.add_argument("--kubeflow-url", default=None, metavar="URL",
                          help="Kubeflow's dashboard address, e.g. https://kubeflow.example.com")
    kubeflow.add_argument("--namespace", default=None, metavar="NS",
                          help="the Tensorboard resource's profile namespace (default: this "
                               "pod's, inside a Kubeflow notebook)")
    kubeflow.add_argument("--name", default="tbpipe",
                          help="the Tensorboard resource's name (default: %(default)s)")
    kubeflow.add_argument("--run", default="", metavar="EXPERIMENT/RUN",
                          help="also print the link filtered to this run")
    cmd.set_defaults(handler=run_tensorboard)


def run_tensorboard(args: argparse.Namespace) -> int:
    """``tbpipe tensorboard``: start, print the address and the loader, serve until stopped."""
    if args.kubeflow_url:
        return print_kubeflow_tensorboard(args)
    server = start_tensorboard(args.log_root, args.host, args.port, args.loader,
                               args.reload_interval, extra_args=args.tensorboard_args,
                               mirror_dir=args.mirror_dir)
    print(f"TensorBoard {server.url} serving {args.log_root}", flush=True)
    print(f"loader: {server.loader.name} ({server.loader.reason})", flush=True)
    if server.mirror is not None and server.mirror.first is not None:
        first, kept = server.mirror.first, "kept" if args.mirror_dir else "removed at exit"
        print(f"mirror: {server.mirror.local_dir} ({kept}): {first.fetched} objects, "
              f"{first.fetched_bytes / 2**20:.1f} MiB in {first.seconds:.1f} s; synced every "
              f"{args.reload_interval:g} s", flush=True)
    with on_sigterm(server.process.terminate):
        try:
            return server.process.wait()
        finally:  # SIGTERM, Ctrl-C or TensorBoard's own exit: the mirror's sync stops too
            server.stop()


#: Where Kubernetes puts the pod's namespace (a Kubeflow notebook's is its profile's).
POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def print_kubeflow_tensorboard(args: argparse.Namespace,
                               namespace_file: str = POD_NAMESPACE_FILE) -> int:
    """Print the address of Kubeflow's Tensorboard resource (and a run's link); start nothing.

    Raises:
        InputError: no ``--namespace`` and none to read in ``namespace_file``, or a bad URL
            or name (one line).

    """
    namespace = args.namespace
    if not namespace:
        try:
            with open(namespace_file, encoding="utf-8") as handle:
                namespace = handle.read().strip()
        except OSError:
            raise InputError("--kubeflow-url needs --namespace: the profile namespace the "
                             "Tensorboard resource is in (e.g. kubeflow-user-jane)") from None
    url = kubeflow_tensorboard_url(args.kubeflow_url, namespace, args.name)
    print(f"Kubeflow TensorBoard {namespace}/{args.name}: {url}")
    if args.run:
        print(f"run {args.run}: {tensorboard_run_url(url, args.run)}")
    else:
        print("a run's link: --run EXPERIMENT/RUN; pass the address to the pipeline as "
              "--tensorboard-url so the evaluation report links to each run")
    return 0
