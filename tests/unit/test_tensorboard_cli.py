"""``tbpipe tensorboard``: which loader runs where, and the command it starts."""

from __future__ import annotations

import os

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.pipelines.cli.main import build_parser
from tbpipe.pipelines.runners.local import DEFAULT_LOG_ROOT
from tbpipe.pipelines.runners.tensorboard import (
    REMOTE_RELOAD_THREADS,
    choose_loader,
    data_server_available,
    resolve_loader,
    tensorboard_command,
    tensorboard_env,
)

EMULATOR = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023"}


@pytest.mark.parametrize(("root", "environ", "fast", "expected"), [
    ("/logs", {}, True, "fast"),
    ("gs://bucket/logs", {}, True, "fast"),
    ("gs://bucket/logs", EMULATOR, True, "mirror"),  # the data server reads real GCS only
    ("/logs", EMULATOR, True, "fast"),  # the emulator matters only for gs://
    ("/logs", {}, False, "python"),
    ("gs://bucket/logs", {}, False, "python"),
    ("s3://bucket/logs", {}, True, "mirror"),  # the data server on a local mirror of s3://
    ("s3://bucket/logs", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, True, "mirror"),
    ("az://container/logs", {}, True, "mirror"),  # any other store fsspec knows
    ("s3://bucket/logs", {}, False, "python"),  # no data server: TensorBoard's fsspec reader
    ("file:///logs", {}, True, "fast"),
])
def test_loader_is_fast_wherever_it_can_read_the_root(root, environ, fast, expected):
    choice = choose_loader(root, environ, fast_available=fast)
    assert choice.name == expected and choice.reason
    if expected == "mirror":
        assert "--loader python" in choice.reason  # the alternative, named


def test_the_mirror_loader_is_the_fast_loader_on_the_mirror_folder():
    mirror = tensorboard_command("s3://b/logs", "127.0.0.1", 6006, "mirror",
                                 mirror_dir="/tmp/m")
    assert mirror[3] == "--load_fast=true" and "--logdir=/tmp/m" in mirror
    assert not any(a.startswith("--max_reload_threads") for a in mirror)  # Rust reads in parallel
    with pytest.raises(InputError, match="--loader mirror needs the mirror's folder"):
        tensorboard_command("s3://b/logs", "127.0.0.1", 6006, "mirror")


def test_mirror_of_a_local_folder_or_a_stray_mirror_dir_is_one_clear_line(tmp_path):
    from tbpipe.pipelines.runners.tensorboard import start_tensorboard

    with pytest.raises(InputError, match="--loader mirror copies a store"):
        start_tensorboard(str(tmp_path), port=6006, loader="mirror")
    for loader in ("fast", "python"):  # asked for by name: the folder is a mistake
        with pytest.raises(InputError, match="--mirror-dir is for the mirror loader"):
            start_tensorboard(str(tmp_path), port=6006, loader=loader,
                              mirror_dir=str(tmp_path / "m"))


@pytest.mark.parametrize(("root", "environ", "expected", "used"), [
    ("s3://bucket/logs", {}, "mirror", True),
    ("az://container/logs", {}, "mirror", True),
    ("gs://bucket/logs", EMULATOR, "mirror", True),
    ("gs://bucket/logs", {}, "fast", False),  # real GCS: the data server reads it
    ("/mnt/tbpipe-logs/logs", {}, "fast", False),  # a volume: read as it is
])
def test_auto_uses_the_mirror_dir_only_where_it_picks_the_mirror(root, environ, expected, used):
    """One command line for every root: the shared TensorBoard's Deployment names the folder."""
    choice, folder = resolve_loader(root, "auto", "/var/cache/m", environ, fast_available=True)
    assert choice.name == expected and folder == ("/var/cache/m" if used else None)
    for none in (None, ""):  # `--mirror-dir=` clears it: the mirror's is a temporary folder
        choice, folder = resolve_loader(root, "auto", none, environ, fast_available=True)
        assert choice.name == expected and folder is None


def test_an_empty_mirror_dir_lets_an_explicit_loader_replace_the_deployments():
    """The Deployment names --mirror-dir; appending `--loader python --mirror-dir=` is valid."""
    args = build_parser().parse_args(["tensorboard", "--log-root=s3://b/logs",
                                      "--mirror-dir=/var/cache/m", "--loader=python",
                                      "--mirror-dir="])
    choice, folder = resolve_loader(args.log_root, args.loader, args.mirror_dir, {}, True)
    assert (choice.name, folder) == ("python", None)


def test_data_server_is_installed_here():
    assert data_server_available()  # tensorboard-data-server ships the binary for this platform


def test_both_loaders_run_behind_the_tensorflow_free_frontend():
    fast = tensorboard_command("/logs", "127.0.0.1", 6006, "fast")
    assert fast[1:2] == ["-P"] and fast[2].endswith("tensorboard_frontend.py")
    assert fast[3] == "--load_fast=true"
    assert {"--logdir=/logs", "--port=6006", "--reload_interval=5"} <= set(fast)
    slow = tensorboard_command("gs://b/logs", "127.0.0.1", 7000, "python", 2, ["--x=1"])
    assert slow[2] == fast[2] and slow[3] == "--load_fast=false"
    assert {"--logdir=gs://b/logs", "--port=7000", "--host=127.0.0.1", "--reload_interval=2",
            "--x=1"} <= set(slow)


def test_the_python_loader_on_a_store_reloads_runs_in_parallel():
    from tests.unit.test_deploy import tensorboard_flags

    on_s3 = tensorboard_command("s3://b/logs", "127.0.0.1", 6006, "python")
    assert tensorboard_flags(on_s3[3:]).max_reload_threads == REMOTE_RELOAD_THREADS > 1
    for local in (tensorboard_command("/logs", "127.0.0.1", 6006, "python"),
                  tensorboard_command("gs://b/logs", "127.0.0.1", 6006, "fast")):
        assert tensorboard_flags(local[3:]).max_reload_threads == 1  # TensorBoard's default
    mine = tensorboard_command("s3://b/logs", "127.0.0.1", 6006, "python",
                               extra_args=["--max_reload_threads=2"])
    assert tensorboard_flags(mine[3:]).max_reload_threads == 2  # the user's flag wins


def test_the_frontend_reads_s3_through_fsspec(monkeypatch):
    """One s3fs client for every read, not TensorBoard's S3 reader (a boto3 client per call)."""
    import fsspec
    from tensorboard.compat.tensorflow_stub.io import gfile

    from tbpipe.pipelines.runners.tensorboard_frontend import configure_file_access

    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.setenv("S3_ENDPOINT", "http://127.0.0.1:9")  # TensorBoard's name for it
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    own = gfile.get_filesystem("s3://b/logs")
    try:
        configure_file_access("s3://b/logs")
        assert isinstance(gfile.get_filesystem("s3://b/logs/run"), gfile.FSSpecFileSystem)
        assert os.environ["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
        assert fsspec.config.conf["s3"]["use_listings_cache"] is False
    finally:
        gfile.register_filesystem("s3", own)


def test_fast_loader_on_s3_is_one_clear_line():
    with pytest.raises(InputError, match="--loader fast cannot read s3://b/logs"):
        tensorboard_command("s3://b/logs", "127.0.0.1", 6006, "fast")
    with pytest.raises(InputError, match="--loader fast cannot read az://c/logs"):
        tensorboard_command("az://c/logs", "127.0.0.1", 6006, "fast")


def test_s3_endpoint_reaches_tensorboards_s3_reader():
    env = tensorboard_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "PATH": "/bin"})
    assert env["S3_ENDPOINT"] == "http://127.0.0.1:9000" and env["PATH"] == "/bin"
    mine = tensorboard_env({"AWS_ENDPOINT_URL": "http://a:1", "S3_ENDPOINT": "http://b:2"})
    assert mine["S3_ENDPOINT"] == "http://b:2"  # one set by the user wins
    assert "S3_ENDPOINT" not in tensorboard_env({})


def test_unknown_loader_is_one_clear_line():
    for loader in ("auto", "rust"):  # auto is resolved before, by choose_loader
        with pytest.raises(InputError, match=f"loader '{loader}': use fast, mirror or python"):
            tensorboard_command("/logs", "127.0.0.1", 6006, loader)


def test_cli_defaults_to_the_pipeline_log_root_on_loopback():
    args = build_parser().parse_args(["tensorboard"])
    assert args.log_root == DEFAULT_LOG_ROOT  # where `tbpipe run` writes by default
    assert (args.host, args.port, args.loader) == ("127.0.0.1", 6006, "auto")
    assert args.mirror_dir is None  # a temporary mirror, removed at exit


# --- Kubeflow's Tensorboard resource: print its address, start nothing ---------------------

def test_kubeflow_url_prints_the_resource_address_and_a_run_link(capsys):
    from urllib.parse import unquote

    from tbpipe.pipelines.cli.main import main

    rc = main(["tensorboard", "--kubeflow-url", "https://kf.example.com/", "--namespace",
               "kubeflow-user-jane", "--run", "exp/r1"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and len(lines) == 2
    address = "https://kf.example.com/tensorboard/kubeflow-user-jane/tbpipe/"
    assert lines[0].endswith(f": {address}")
    link = lines[1].split(": ", 1)[1]
    base, _, label = link.partition("#scalars&regexInput=")
    assert base == address and unquote(label) == "exp/r1"


def test_kubeflow_address_keeps_a_path_prefix_and_takes_the_name():
    from tbpipe.components.common.naming import kubeflow_tensorboard_url

    assert kubeflow_tensorboard_url("http://host:8080/kf", "ns-1", "board") == \
        "http://host:8080/kf/tensorboard/ns-1/board/"


def test_namespace_defaults_to_the_pods_own(tmp_path, capsys):
    from tbpipe.pipelines.cli.tensorboard import print_kubeflow_tensorboard

    args = build_parser().parse_args(["tensorboard", "--kubeflow-url", "https://kf"])
    (tmp_path / "namespace").write_text("kubeflow-user-pod\n")
    assert print_kubeflow_tensorboard(args, str(tmp_path / "namespace")) == 0
    assert "https://kf/tensorboard/kubeflow-user-pod/tbpipe/" in capsys.readouterr().out
    with pytest.raises(InputError, match="--kubeflow-url needs --namespace"):
        print_kubeflow_tensorboard(args, str(tmp_path / "absent"))


@pytest.mark.parametrize(("flags", "needle"), [
    (["--kubeflow-url", "kf.example.com", "--namespace", "ns"], "--kubeflow-url 'kf.example"),
    (["--kubeflow-url", "https://kf", "--namespace", "Team_A"], "--namespace 'Team_A'"),
    (["--kubeflow-url", "https://kf", "--namespace", "ns", "--name", "a/b"], "--name 'a/b'"),
])
def test_bad_kubeflow_flags_are_one_line(capsys, flags, needle):
    from tbpipe.pipelines.cli.main import main

    rc = main(["tensorboard", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and needle in err[0], err


# --- the TensorBoard image: tbpipe with the `tensorboard` extra only ------------------------

#: Modules of the `run` extra's packages that the `tensorboard` extra (the TensorBoard image,
#: docker/tensorboard.Dockerfile) does not install.
RUN_ONLY_MODULES = ("tensorflow", "keras", "tensorboardX", "pandas", "pyarrow", "sklearn",
                    "optuna", "cmaes", "docker", "tensorflow_serving", "boto3")
IMPORTS_WITHOUT_RUN = """
import json, sys
for name in sys.argv[1:]:
    sys.modules[name] = None  # `import name` fails, as where it is not installed
from tbpipe.pipelines.cli.main import build_parser
from tbpipe.pipelines.runners import tensorboard, tensorboard_frontend, tensorboard_mirror
args = build_parser().parse_args(["tensorboard", "--log-root=s3://b/logs", "--mirror-dir=/m"])
assert args.handler.__module__ == "tbpipe.pipelines.cli.tensorboard"
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules if sys.modules[m] is not None})))
"""


def test_tbpipe_tensorboard_needs_nothing_the_tensorboard_extra_lacks():
    """What the image's entry point imports (the CLI, the loaders, the mirror) is installed
    there; the image build checks it again against the real install."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", IMPORTS_WITHOUT_RUN, *RUN_ONLY_MODULES],
                          capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not set(RUN_ONLY_MODULES) & set(json.loads(proc.stdout))
