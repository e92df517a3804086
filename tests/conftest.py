"""Shared fixtures: a real local GCS server (gcp-storage-emulator) for gs:// tests.

``gcs_emulator`` (session) starts the emulator on a free loopback port with on-disk storage
(so a stop/start keeps every object, as for a real outage), points this process and its
children at it (``STORAGE_EMULATOR_HOST``), creates a bucket, and stops it at the end.
``gcs_root`` (per test) gives a fresh ``gs://`` prefix and makes sure the emulator is up.

Outage tests use ``gcs_emulator.stop()`` / ``.start()`` or ``with gcs_emulator.outage():``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port

# gcsfs >= 2025 asks the Storage Control gRPC API for the bucket type first, which an emulator
# does not serve (a 60 s stall per bucket); plain JSON-API gcsfs is what it speaks.
EMULATOR_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}


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
            [sys.executable, "-m", "gcp_storage_emulator", "-d", str(self.data_dir / "store"),
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
        from google.api_core.exceptions import Conflict

        from tbpipe.components.common.storage.gcs import gcs_client

        with contextlib.suppress(Conflict):
            gcs_client().create_bucket(name)

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
    from tbpipe.components.common.storage.gcs import reset_gcs_client

    emulator = GcsEmulator(tmp_path_factory.mktemp("gcs-emulator"))
    emulator.start()
    saved = {key: os.environ.get(key) for key in emulator.env()}
    os.environ.update(emulator.env())
    reset_gcs_client()
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
        reset_gcs_client()


@pytest.fixture
def gcs_root(gcs_emulator: GcsEmulator, request: pytest.FixtureRequest) -> str:
    """A fresh ``gs://`` prefix for one test, on a running emulator."""
    gcs_emulator.start()
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)[:60]
    return gcs_emulator.uri(f"{name}-{uuid.uuid4().hex[:8]}")
