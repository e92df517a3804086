"""Small generated data sets for tests: fast, deterministic, learnable."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import numpy as np

from tbpipe.components.common.dataset import DatasetInfo, DatasetWriter

#: The ``tbpipe`` command of this environment, as a subprocess argv prefix.
TBPIPE = (sys.executable, "-m", "tbpipe.pipelines.cli")


def synthetic_images(n: int, shape: tuple[int, int, int] = (8, 8, 1), classes: int = 4,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] where class k lights up row k (mod H) on top of noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    images = rng.uniform(0.0, 0.3, size=(n, *shape)).astype(np.float32)
    for k in range(classes):
        images[labels == k, k % shape[0], :, :] = 1.0
    return images, labels.astype(np.int32)


def write_dataset(root: str, n: int = 64, shape: tuple[int, int, int] = (8, 8, 1),
                  classes: int = 4, seed: int = 0, shard_records: int = 50_000) -> DatasetInfo:
    """Write a synthetic tbpipe Dataset folder at ``root`` and return its manifest."""
    images, labels = synthetic_images(n, shape, classes, seed)
    writer = DatasetWriter(root, shape, classes, shard_records=shard_records)
    writer.write(images, labels)
    return writer.close()



def write_train_val(root, n_train: int = 64, n_val: int = 32, **options) -> tuple[str, str]:
    """Write ``root/train`` (seed 0) and ``root/val`` (seed 1) Dataset folders; their paths."""
    train, val = str(root / "train"), str(root / "val")
    write_dataset(train, n=n_train, seed=0, **options)
    write_dataset(val, n=n_val, seed=1)
    return train, val

def read_scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in one run folder's event files: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_tags(log_dir: str) -> dict[str, list[str]]:
    """The tags of every kind (scalars, histograms, images, tensors) in one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "histograms": 0, "images": 0,
                                                   "tensors": 0})
    acc.Reload()
    return acc.Tags()


def read_text(log_dir: str, tag: str) -> str:
    """The last text summary ``tag`` (as written by ``add_text``) in one run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    names = [t for t in acc.Tags()["tensors"] if t in (tag, f"{tag}/text_summary")]
    assert names, f"no text {tag!r} in {log_dir}: {acc.Tags()['tensors']}"
    proto = acc.Tensors(names[0])[-1].tensor_proto
    return b"".join(proto.string_val).decode()


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10) -> object:
    """GET ``url`` and parse the JSON reply."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.loads(reply.read())


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` inside the block; restore what was there after it."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def point_fsspec_at_environment() -> None:
    """Re-read fsspec's ``FSSPEC_*`` variables and forget cached filesystems (new endpoints).

    fsspec reads those variables when it is imported; child processes read them afresh.
    """
    import fsspec.config

    from tbpipe.components.common.storage import reset_filesystems

    for key in [k for k in fsspec.config.conf if k in ("gs", "gcs", "az", "abfs")]:
        fsspec.config.conf.pop(key)
    fsspec.config.set_conf_env(fsspec.config.conf)
    reset_filesystems()


def event_file_parts(folder: str, steps: int, parts: int = 4) -> tuple[bytes, list[bytes], bytes]:
    """One step's event file (scalar ``loss`` at steps 0..steps-1), as tbpipe's sink publishes it.

    Returns:
        The file's bytes, the same cut into about ``parts`` segments of whole records (the
        objects ``<file>.NNNNNN``), and its compacted object (restart marker, then the bytes).

    """
    from tensorboardX import SummaryWriter

    from tbpipe.components.common.tensorboard.segments import read_records, restart_marker

    with SummaryWriter(folder) as writer:
        for step in range(steps):
            writer.add_scalar("loss", 1.0 / (step + 1), step)
    (name,) = [n for n in os.listdir(folder) if "tfevents" in n]
    path = os.path.join(folder, name)
    data = open(path, "rb").read()
    segments, offset = [], 0
    while offset < len(data):
        segments.append(read_records(path, offset, len(data) // parts + 1))
        offset += len(segments[-1])
    return data, segments, (restart_marker(path) or b"") + data


@contextlib.contextmanager
def served_tensorboard(log_root: str, log_path: str,
                       lines: int = 2) -> Iterator[tuple[subprocess.Popen, str, list[str]]]:
    """``tbpipe tensorboard --log-root LOG_ROOT`` on a free port, reloading every second.

    Yields the process, its base URL and the first ``lines`` lines it printed (address,
    loader, then the mirror's line where there is one); its stderr goes to ``log_path``. The
    process is terminated (killed if it does not stop) when the block ends.
    """
    port = free_port()
    with open(log_path, "w") as log:
        cli = subprocess.Popen([*TBPIPE, "tensorboard", "--log-root", log_root, "--port",
                                str(port), "--reload-interval", "1"],
                               stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            yield cli, f"http://127.0.0.1:{port}/", [cli.stdout.readline() for _ in range(lines)]
        finally:
            if cli.poll() is None:
                cli.terminate()
                try:
                    cli.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    cli.kill()
                    cli.wait()


def run_benchmark(module: str, args: list[str], folder, timeout: float = 900) -> dict:  # noqa: ANN001
    """Run ``python -m benchmarks.MODULE ARGS --json FILE`` (it must succeed); its report."""
    out = os.path.join(folder, f"{module}.json")
    subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args, "--json", out],
                   check=True, capture_output=True, text=True, timeout=timeout)
    with open(out) as handle:
        return json.load(handle)
