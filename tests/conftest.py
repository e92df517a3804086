"""Shared fixtures: real local object stores, GCS (gcp-storage-emulator) and S3 (moto server).

``gcs_emulator`` (session) starts the emulator on a free loopback port with on-disk storage
(so a stop/start keeps every object, as for a real outage), points this process and its
children at it (``STORAGE_EMULATOR_HOST``), creates a bucket, and stops it at the end.
``gcs_root`` (per test) gives a fresh ``gs://`` prefix and makes sure the emulator is up.

Outage tests use ``gcs_emulator.stop()`` / ``.start()`` or ``with gcs_emulator.outage():``.

``s3_server`` (session) starts moto's S3 server (``python -m moto.server``) on a free loopback
port, points this process and its children at it (``AWS_ENDPOINT_URL`` and test credentials),
creates a bucket; ``s3_root`` (per test) gives a fresh ``s3://`` prefix.

``azurite`` (session) starts Azurite, Microsoft's Azure Blob emulator (an npm package:
``scripts/setup.sh`` installs it under ``.tools/azurite``; the fixture installs it there
itself when missing) on a free loopback port with a data folder of its own, points this
process and its children at it (``AZURE_STORAGE_CONNECTION_STRING``, which adlfs reads),
creates a container; ``az_root`` (per test) gives a fresh ``az://`` prefix. tbpipe has no
code for Azure: it is the store that shows "any scheme fsspec knows". Where Azurite cannot
be installed (no node/npm, no registry) its tests skip with the reason, except under
``CI=true``, where they fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.group_durations import group_of
from tests.helpers import environment, free_port, point_fsspec_at_environment

# gcsfs >= 2025 asks the Storage Control gRPC API for the bucket type first, which an emulator
# does not serve (a 60 s stall per bucket); plain JSON-API gcsfs is what it speaks.
# An emulator takes no credentials: gcsfs is told so through fsspec's own configuration
# variables (FSSPEC_<PROTOCOL>_<OPTION>), as a user would.
EMULATOR_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "FSSPEC_GS_TOKEN": "anon"}
# gcsfs reads that switch once, when it is first imported: a test that imports gcsfs before
# the emulator's fixture sets it would stall every later gs:// test of its worker. Set it for
# the whole test process, before anything imports gcsfs.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def fresh_prefix(request: pytest.FixtureRequest) -> str:
    """A prefix of one test's own under a store's bucket: its name, made safe, and a suffix."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return f"{name}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def pointed_at(server, create: Callable[[], None]) -> Iterator[None]:  # noqa: ANN001
    """This process and its children pointed at a started ``server`` (its ``env()``), with
    fresh filesystems; ``create`` makes its bucket; the server is stopped at the end."""
    from tbpipe.components.common.storage import reset_filesystems

    try:
        with environment(server.env()):
            reset_filesystems()
            create()
            yield
    finally:
        server.stop()
        reset_filesystems()


class GcsEmulator:
    """A gcp-storage-emulator process that can be stopped and restarted on the same port."""

    def __init__(self, data_dir: Path, bucket: str = "tbpipe-test") -> None:
        self.data_dir, self.bucket, self.port = data_dir, bucket, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """Variables that point google-cloud-storage and gcsfs at this emulator."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, **EMULATOR_ENV}

    def uri(self, *parts: str) -> str:
        """``gs://<bucket>/<parts...>``."""
        return "/".join([f"gs://{self.bucket}", *(p.strip("/") for p in parts if p)])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (a no-op if it runs) and wait until it answers."""
        if self.running:
            return
        log = open(self.data_dir / "emulator.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-P", str(Path(__file__).with_name("gcs_emulator.py")),  # mended
             "-d", str(self.data_dir / "store"),
             "start", "--host", "127.0.0.1", "--port", str(self.port), "-q"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gcp-storage-emulator exited; see {self.data_dir}/emulator.log")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.endpoint + "/", timeout=1) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gcp-storage-emulator did not answer on {self.endpoint}")

    def stop(self) -> None:
        """Stop the server: connections are refused until ``start``; objects are kept."""
        if not self.running:
            return
        self.process.send_signal(signal.SIGINT)  # finishes the request in flight, then exits
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Storage is down inside the block and back after it."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def create_bucket(self, name: str) -> None:
        """Create a bucket with a client of its own (google-cloud-storage, not tbpipe's)."""
        from google.api_core.exceptions import Conflict
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage as gcs

        client = gcs.Client(project="tbpipe-test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": self.endpoint})
        with contextlib.suppress(Conflict):
            client.create_bucket(name)

    def download(self, uri: str, local_dir: Path) -> Path:
        """Copy every object under ``uri`` into ``local_dir`` (keeping relative paths)."""
        from tbpipe.components.common.storage import download_file, join, list_files

        for rel in list_files(uri):
            download_file(join(uri, rel), str(local_dir / rel))
        return local_dir


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsEmulator]:
    """A running emulator with a bucket; this process and its children point at it."""
    pytest.importorskip("gcp_storage_emulator")
    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs-emulator"))
    emulator.start()
    saved = {key: os.environ.get(key) for key in emulator.env()}
    os.environ.update(emulator.env())
    point_fsspec_at_environment()
    try:
        emulator.create_bucket(emulator.bucket)
        yield emulator
    finally:
        emulator.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        point_fsspec_at_environment()


@pytest.fixture
def gcs_root(gcs_emulator: GcsEmulator, request: pytest.FixtureRequest) -> str:
    """A fresh ``gs://`` prefix for one test, on a running emulator."""
    gcs_emulator.start()
    return gcs_emulator.uri(fresh_prefix(request))


class S3Server:
    """moto's S3 server (``python -m moto.server``) in a process of its own; state in memory."""

    def __init__(self, log_dir: Path, bucket: str = "tbpipe-test") -> None:
        self.log_dir, self.bucket, self.port = log_dir, bucket, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def env(self, access_key: str = "testing", secret_key: str = "testing") -> dict[str, str]:
        """The standard AWS variables that point boto3 (and TensorBoard's S3 reader) here."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": access_key,
                "AWS_SECRET_ACCESS_KEY": secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def uri(self, *parts: str) -> str:
        """``s3://<bucket>/<parts...>``."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts if p)])

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it answers."""
        log = open(self.log_dir / "moto.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited; see {self.log_dir}/moto.log")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self, access_key: str = "testing", secret_key: str = "testing"):  # noqa: ANN201
        """A boto3 S3 client of its own (not tbpipe's) for setting up the server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=access_key, aws_secret_access_key=secret_key)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def enable_auth(self) -> None:
        """From now on every request is authenticated and authorized (moto's IAM checks)."""
        request = urllib.request.Request(self.endpoint + "/moto-api/reset-auth", data=b"0",
                                         headers={"Content-Type": "text/plain"}, method="POST")
        urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running moto S3 server with a bucket; this process and its children point at it."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")

    server = S3Server(tmp_path_factory.mktemp("s3-server"))
    server.start()
    with pointed_at(server, lambda: server.create_bucket(server.bucket)):
        yield server


@pytest.fixture
def s3_root(s3_server: S3Server, request: pytest.FixtureRequest) -> str:
    """A fresh ``s3://`` prefix for one test."""
    return s3_server.uri(fresh_prefix(request))


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3Server, str, str]]:
    """A second moto server that authorizes every request (its IAM): ``(server, key, secret)``

    The key's user may use bucket ``tbpipe-allowed`` only; ``tbpipe-denied`` exists too.
    """
    pytest.importorskip("moto.server")
    import boto3

    server = S3Server(tmp_path_factory.mktemp("s3-auth"))
    server.start()
    try:
        for bucket in ("tbpipe-allowed", "tbpipe-denied"):
            server.create_bucket(bucket)
        iam = boto3.client("iam", endpoint_url=server.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        iam.create_user(UserName="step")
        policy = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "s3:*",
            "Resource": ["arn:aws:s3:::tbpipe-allowed", "arn:aws:s3:::tbpipe-allowed/*"]}]}
        iam.put_user_policy(UserName="step", PolicyName="one-bucket",
                            PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="step")["AccessKey"]
        server.enable_auth()
        yield server, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        server.stop()


AZURITE_PACKAGE = "azurite@3.35.0"
AZURITE_DIR = Path(__file__).resolve().parent.parent / ".tools" / "azurite"
AZURITE_BLOB = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's one built-in account and its published development key (not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")


def azurite_binary() -> Path:
    """Azurite's blob server, installed with npm under .tools/azurite if it is not yet.

    Skips the calling test with the reason where it cannot be installed; fails under CI.
    """
    if not AZURITE_BLOB.exists():
        problem = None
        if not shutil.which("npm") or not shutil.which("node"):
            problem = "node and npm are not installed"
        else:
            AZURITE_DIR.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(["npm", "install", "--prefix", str(AZURITE_DIR), "--no-audit",
                                   "--no-fund", "--loglevel=error", AZURITE_PACKAGE],
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode or not AZURITE_BLOB.exists():
                problem = f"npm install {AZURITE_PACKAGE} failed: {proc.stderr.strip()[-300:]}"
        if problem:
            message = f"Azurite (the Azure Blob emulator) cannot be installed: {problem}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
    return AZURITE_BLOB


class Azurite:
    """Azurite's blob service in a process of its own, state in its own data folder."""

    def __init__(self, data_dir: Path, container: str = "tbpipe-test") -> None:
        self.data_dir, self.container, self.port = data_dir, container, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        """The standard Azure variable that points adlfs (and azure-storage-blob) here."""
        return {"AZURE_STORAGE_CONNECTION_STRING": (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint};")}

    def uri(self, *parts: str) -> str:
        """``az://<container>/<parts...>``."""
        return "/".join([f"az://{self.container}", *(p.strip("/") for p in parts if p)])

    def start(self, binary: Path, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers."""
        log = open(self.data_dir / "azurite.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--location", str(self.data_dir / "store"), "--skipApiVersionCheck", "--loose",
             "--silent"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited; see {self.data_dir}/azurite.log")
            try:
                urllib.request.urlopen(self.endpoint + "?comp=list", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers (unsigned requests are refused)
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Azurite did not answer on {self.endpoint}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def create_container(self, name: str) -> None:
        """Create a container with a client of its own (azure-storage-blob, not tbpipe's)."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        client = BlobServiceClient.from_connection_string(self.env()[
            "AZURE_STORAGE_CONNECTION_STRING"])
        with contextlib.suppress(ResourceExistsError):
            client.create_container(name)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """A running Azurite with a container; this process and its children point at it."""
    pytest.importorskip("adlfs")

    server = Azurite(tmp_path_factory.mktemp("azurite"))
    server.start(azurite_binary())
    with pointed_at(server, lambda: server.create_container(server.container)):
        yield server


@pytest.fixture
def az_root(azurite: Azurite, request: pytest.FixtureRequest) -> str:
    """A fresh ``az://`` prefix for one test."""
    return azurite.uri(fresh_prefix(request))


#: Seconds each xdist group took in a whole run (tests/group_durations.py writes it).
GROUP_DURATIONS = Path(__file__).with_name("group_durations.json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the tests for the workers (scripts/test.sh runs pytest-xdist): groups longest
    first (by the recorded durations; a group not recorded yet counts as a long one), so the
    run does not end waiting on one long group started last; a group's tests keep their
    order (:func:`pytest_xdist_make_scheduler` hands each group to one worker). The docker
    group goes first whatever its record: it builds the images, which takes seconds with a
    warm layer cache and many minutes on a fresh machine, and no record tells which.
    """
    if not config.pluginmanager.hasplugin("xdist"):
        return
    recorded = json.loads(GROUP_DURATIONS.read_text()) if GROUP_DURATIONS.is_file() else {}
    unknown = max(recorded.values(), default=0.0) / 2
    order = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: (group_of(item.nodeid) != "docker",  # see the docstring
                                 -recorded.get(group_of(item.nodeid), unknown),
                                 order[id(item)]))


#: The pytest-xdist releases whose scheduler :func:`pytest_xdist_make_scheduler` extends.
XDIST_CHECKED = ">=3.6,<4"


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown when xdist is not loaded
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """Hand each group (:func:`tests.group_durations.group_of`) to one worker, whole.

    xdist's ``--dist loadgroup`` reads ``xdist_group`` marks into the node ids, which pytest 9
    no longer lets it change (``Node.nodeid`` is read-only), so every module's tests were
    spread over the workers and its module-scoped fixtures (whole pipeline runs) ran on each.
    Its load-scope scheduler with the group as the scope does what loadgroup meant. Only with
    the xdist releases it was checked with; otherwise (None) xdist's own ``--dist`` applies.
    """
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet
    from xdist.scheduler import LoadScopeScheduling

    if version("pytest-xdist") not in SpecifierSet(XDIST_CHECKED):
        return None

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)
