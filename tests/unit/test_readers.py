"""Input readers: CSV, Parquet, MNIST IDX folders, built-in data sets, and their errors."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import tracemalloc
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.preprocessing.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC
from tbpipe.components.preprocessing.readers import open_source
from tests.helpers import synthetic_images

REPO = Path(__file__).resolve().parents[2]


def table_data(n: int = 40, side: int = 4, classes: int = 4,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pixels 0..255 as uint8 ``(n, side*side)`` and labels, from the shared generator."""
    images, labels = synthetic_images(n, (side, side, 1), classes, seed)
    return np.rint(images * 255).astype(np.uint8).reshape(n, -1), labels


def table_frame(pixels: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(pixels.shape[1])])
    frame.insert(0, "label", labels)
    return frame


def write_csv(path: Path, pixels: np.ndarray, labels: np.ndarray) -> str:
    """Write a Kaggle-layout table (label,pixel0,...); .gz / .parquet by the suffix."""
    frame = table_frame(pixels, labels)
    if path.suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return str(path)


def idx_bytes(array: np.ndarray) -> bytes:
    magic = IDX_IMAGES_MAGIC if array.ndim == 3 else IDX_LABELS_MAGIC
    dims = np.array(array.shape, dtype=">u4").tobytes()
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
              gz: bool = False) -> None:
    """Write ``{prefix}-images-idx3-ubyte`` and ``{prefix}-labels-idx1-ubyte`` (or .gz)."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, dims, array in (("images", "idx3", images), ("labels", "idx1", labels)):
        name = f"{prefix}-{kind}-{dims}-ubyte"
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def read_all(uri: str, chunk_rows: int = 1000, image_shape=None):  # noqa: ANN001, ANN201
    with open_source(uri, chunk_rows, image_shape) as source:
        chunks = list(source.chunks())
    return source, chunks


@pytest.mark.parametrize("name", ["data.csv", "data.csv.gz", "data.parquet", "data.pq"])
def test_tables_stream_in_chunks(tmp_path: Path, name: str) -> None:
    pixels, labels = table_data(n=23)
    source, chunks = read_all(write_csv(tmp_path / name, pixels, labels), chunk_rows=5)
    assert source.image_shape == (4, 4, 1)
    assert source.max_value is None  # a table's scale is decided from its values
    assert [len(c.labels) for c in chunks] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), pixels)
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), labels)


def test_image_shape_for_non_square_tables(tmp_path: Path) -> None:
    pixels, labels = table_data(n=6)
    uri = write_csv(tmp_path / "wide.csv", pixels[:, :12], labels)
    with pytest.raises(InputError, match=r"wide\.csv.*not a square.*image_shape"):
        read_all(uri)
    source, _ = read_all(uri, image_shape=(2, 3, 2))
    assert source.image_shape == (2, 3, 2)
    with pytest.raises(InputError, match=r"wide\.csv.*12 pixel columns.*\(4, 4, 1\)"):
        read_all(uri, image_shape=(4, 4, 1))


def test_table_errors_name_the_input(tmp_path: Path) -> None:
    pixels, labels = table_data(n=6)
    no_label = tmp_path / "nolabel.csv"
    table_frame(pixels, labels).rename(columns={"label": "digit"}).to_csv(no_label, index=False)
    with pytest.raises(InputError, match=r"nolabel\.csv: no 'label' column"):
        read_all(str(no_label))

    text = tmp_path / "text.csv"
    frame = table_frame(pixels, labels).astype({"pixel3": object})
    frame.loc[2, "pixel3"] = "dark"
    frame.to_csv(text, index=False)
    with pytest.raises(InputError, match=r"text\.csv: column 'pixel3' is not numeric.*dark"):
        read_all(str(text))

    typed = tmp_path / "typed.parquet"
    frame.astype({"pixel3": str}).to_parquet(typed, index=False)
    with pytest.raises(InputError, match=r"typed\.parquet: column 'pixel3' has type"):
        read_all(str(typed))

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.csv: not a readable CSV"):
        read_all(str(empty))

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"broken\.parquet: not a readable Parquet"):
        read_all(str(broken))


def test_unknown_format_and_missing_path(tmp_path: Path) -> None:
    other = tmp_path / "images.txt"
    other.write_text("label,pixel0\n1,2\n")
    with pytest.raises(InputError, match=r"images\.txt: unknown data format; use"):
        read_all(str(other))
    with pytest.raises(InputError, match=r"nowhere\.csv: no such file or folder"):
        read_all(str(tmp_path / "nowhere.csv"))
    with pytest.raises(InputError, match=r"builtin:cifar: unknown built-in"):
        read_all("builtin:cifar")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_train_and_t10k(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(1)
    train_x, train_y = rng.integers(0, 256, (11, 5, 5)), rng.integers(0, 3, 11)
    test_x, test_y = rng.integers(0, 256, (4, 5, 5)), rng.integers(0, 3, 4)
    write_idx(tmp_path / "mnist", "train", train_x, train_y, gz)
    write_idx(tmp_path / "mnist", "t10k", test_x, test_y, gz)
    source, chunks = read_all(str(tmp_path / "mnist"), chunk_rows=4)
    assert source.image_shape == (5, 5, 1) and source.has_test_split
    assert [(len(c.labels), c.split) for c in chunks] == [
        (4, None), (4, None), (3, None), (4, "test")]
    np.testing.assert_array_equal(
        np.concatenate([c.pixels for c in chunks[:3]]), train_x.reshape(11, 25))
    np.testing.assert_array_equal(chunks[3].labels, test_y)


def test_idx_folder_without_t10k(tmp_path: Path) -> None:
    images, labels = np.arange(3 * 4, dtype=np.uint8).reshape(3, 2, 2), np.array([0, 1, 0])
    write_idx(tmp_path, "train", images, labels)
    source, chunks = read_all(str(tmp_path))
    assert not source.has_test_split
    assert [c.split for c in chunks] == [None]
    np.testing.assert_array_equal(chunks[0].pixels, images.reshape(3, 4))


def test_idx_errors_name_the_file(tmp_path: Path) -> None:
    images, labels = np.zeros((3, 2, 2), np.uint8), np.array([0, 1, 0])
    with pytest.raises(InputError, match=r"without train-images-idx3-ubyte"):
        read_all(str(tmp_path))

    write_idx(tmp_path, "train", images, labels)
    image_file = tmp_path / "train-images-idx3-ubyte"
    good = image_file.read_bytes()
    image_file.write_bytes(good[:-1])
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte: 27 bytes.*truncated"):
        read_all(str(tmp_path))

    image_file.write_bytes(IDX_LABELS_MAGIC.to_bytes(4, "big") + good[4:])
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte: IDX magic 0x00000801, "
                                         r"expected 0x00000803"):
        read_all(str(tmp_path))

    write_idx(tmp_path, "train", images, np.array([0, 1]))
    with pytest.raises(InputError, match=r"3 images but .*train-labels-idx1-ubyte has 2"):
        read_all(str(tmp_path))

    write_idx(tmp_path, "train", images, labels)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    with pytest.raises(InputError, match=r"t10k-labels-idx1-ubyte is missing"):
        read_all(str(tmp_path))


def test_truncated_gz_idx_is_reported_while_reading(tmp_path: Path) -> None:
    images, labels = np.ones((6, 3, 3), np.uint8), np.arange(6) % 2
    write_idx(tmp_path, "train", images, labels, gz=True)
    gz_file = tmp_path / "train-images-idx3-ubyte.gz"
    gz_file.write_bytes(gzip.compress(idx_bytes(images)[:-5]))
    with pytest.raises(InputError, match=r"train-images-idx3-ubyte\.gz: ends early"):
        read_all(str(tmp_path), chunk_rows=2)


def test_builtin_digits() -> None:
    source, chunks = read_all("builtin:digits", chunk_rows=500)
    assert source.image_shape == (8, 8, 1) and source.max_value == 16
    assert [len(c.labels) for c in chunks] == [500, 500, 500, 297]
    assert set(np.concatenate([c.labels for c in chunks]).tolist()) == set(range(10))


def test_builtin_mnist_without_network_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline():  # noqa: ANN202
        raise OSError("Name or service not known")

    fake = types.ModuleType("keras.datasets")
    fake.mnist = types.SimpleNamespace(load_data=offline)
    monkeypatch.setitem(sys.modules, "keras", types.ModuleType("keras"))
    monkeypatch.setitem(sys.modules, "keras.datasets", fake)
    with pytest.raises(InputError, match=r"builtin:mnist: download failed.*network.*"
                                         r"builtin:digits"):
        read_all("builtin:mnist")


@pytest.fixture
def gcs_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A gs:// bucket served by gcp-storage-emulator on a free local port."""
    import socket

    from gcp_storage_emulator.server import create_server

    from tests.gcs_emulator import mend
    from tests.helpers import point_fsspec_at_environment

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    mend()  # every byte of a multipart upload kept (tests/gcs_emulator.py)
    server = create_server("localhost", port, in_memory=True, default_bucket="data-bkt")
    server.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://localhost:{port}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
    monkeypatch.setenv("FSSPEC_GS_TOKEN", "anon")  # an emulator takes no credentials
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    point_fsspec_at_environment()
    try:
        yield "gs://data-bkt"
    finally:
        monkeypatch.undo()
        point_fsspec_at_environment()
        server.stop()


@pytest.mark.gcs
def test_gcs_table_object_and_idx_prefix(tmp_path: Path, gcs_bucket: str) -> None:
    from tbpipe.components.common import storage

    pixels, labels = table_data(n=9)
    storage.upload_file(write_csv(tmp_path / "t.csv.gz", pixels, labels),
                        f"{gcs_bucket}/tables/t.csv.gz")
    write_idx(tmp_path / "idx", "train", pixels.reshape(9, 4, 4), labels, gz=True)
    for path in (tmp_path / "idx").iterdir():
        storage.upload_file(str(path), f"{gcs_bucket}/mnist/{path.name}")
    for uri in (f"{gcs_bucket}/tables/t.csv.gz", f"{gcs_bucket}/mnist"):
        source, chunks = read_all(uri, chunk_rows=4)
        assert source.image_shape == (4, 4, 1)
        np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), pixels)
    with pytest.raises(StorageError, match=r"gs://data-bkt/tables/none\.csv"):
        read_all(f"{gcs_bucket}/tables/none.csv")


# ---- inputs bounded: only regular files, IDX claims held to the file, CSV lines bounded ---

def _read_in_child(uri: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """read_all(uri) in a child process with a timeout: a blocking read fails the test."""
    code = ("import sys\n"
            "from tbpipe.components.common.errors import InputError\n"
            "from tests.unit.test_readers import read_all\n"
            "try:\n"
            f"    read_all({uri!r})\n"
            "except InputError as exc:\n"
            "    print(exc)\n"
            "    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "data.csv"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    proc = _read_in_child(str(fifo), timeout=60)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert re.search(rf"{re.escape(str(fifo))}: is a FIFO \(named pipe\), not a regular file",
                     proc.stdout)

    images, labels = np.zeros((3, 2, 2), np.uint8), np.array([0, 1, 0])
    write_idx(tmp_path / "mnist", "train", images, labels)
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").unlink(missing_ok=True)
    os.mkfifo(tmp_path / "mnist" / "t10k-images-idx3-ubyte")
    proc = _read_in_child(str(tmp_path / "mnist"), timeout=60)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "t10k-images-idx3-ubyte: is a FIFO" in proc.stdout


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_device_is_refused() -> None:
    with pytest.raises(InputError, match=r"^/dev/zero: is a device, not a regular file"):
        read_all("/dev/zero")


def _idx_header(magic: int, dims: tuple[int, ...]) -> bytes:
    return magic.to_bytes(4, "big") + np.array(dims, ">u4").tobytes()


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_header_claiming_10_to_the_12_bytes_allocates_nothing(tmp_path: Path,
                                                                     gz: bool) -> None:
    write_idx(tmp_path, "train", np.zeros((4, 2, 2)), np.arange(4) % 2, gz=gz)
    data = _idx_header(IDX_IMAGES_MAGIC, (10**6, 1000, 1000)) + bytes(4000)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=rf"{name}: .*\(1000000, 1000, 1000\) "
                                             r"\(1000000000016 bytes\)"):
            read_all(str(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_an_idx_header_claiming_a_huge_image_is_refused(tmp_path: Path) -> None:
    write_idx(tmp_path, "train", np.zeros((4, 2, 2)), np.arange(4) % 2, gz=True)
    data = _idx_header(IDX_IMAGES_MAGIC, (1, 60000, 60000)) + bytes(16)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    with pytest.raises(InputError, match=r"images of 60000x60000 pixels"):
        read_all(str(tmp_path))


@pytest.mark.parametrize(("change", "message"), [
    (lambda data: data[:-5], r"train-images-idx3-ubyte\.gz: ends early"),
    (lambda data: data + b"\0" * 7, r"train-images-idx3-ubyte\.gz: data after the 6 records"),
])
def test_a_gz_idx_stream_must_match_its_header(tmp_path: Path, change, message: str) -> None:
    images, labels = np.ones((6, 3, 3), np.uint8), np.arange(6) % 2
    write_idx(tmp_path, "train", images, labels, gz=True)
    gz_file = tmp_path / "train-images-idx3-ubyte.gz"
    gz_file.write_bytes(gzip.compress(change(idx_bytes(images))))
    with pytest.raises(InputError, match=message):
        read_all(str(tmp_path), chunk_rows=4)


def write_long_line_csv(path: Path, line_bytes: int) -> str:
    """A 16-pixel table whose second data row is one line of ``line_bytes`` digits."""
    with open(path, "wb") as handle:
        handle.write(b"label," + ",".join(f"pixel{i}" for i in range(16)).encode() + b"\n")
        handle.write(b"1," + b"0," * 15 + b"0\n")
        handle.write(b"2,")
        piece = b"9" * (1 << 20)
        for _ in range(line_bytes // len(piece)):
            handle.write(piece)
        handle.write(b"\n")
    return str(path)


def test_a_50_mb_csv_line_fails_in_one_line_with_flat_memory(tmp_path: Path) -> None:
    uri = write_long_line_csv(tmp_path / "long.csv", 50 << 20)
    code = ("import resource, sys\n"
            "import pandas\n"
            "from tbpipe.components.common.errors import InputError\n"
            "from tests.unit.test_readers import read_all, table_data, write_csv\n"
            "from pathlib import Path\n"
            f"read_all(write_csv(Path({str(tmp_path / 'warm.csv')!r}), *table_data()))\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n"
            f"    read_all({uri!r})\n"
            "except InputError as exc:\n"
            "    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "    print((after - before) // 1024)\n"
            "    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    growth_mb, message = proc.stdout.splitlines()[:2]
    assert re.fullmatch(rf"{re.escape(uri)}: line 3 is longer than 65536 bytes \(17 columns "
                        r"allow 65536 bytes a line\); .*fix it", message), message
    print(f"peak memory growth on a 50 MB line: {growth_mb} MB")
    assert int(growth_mb) < 20, f"peak memory grew {growth_mb} MB on a 50 MB line"


def test_a_long_header_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "header.csv.gz"
    path.write_bytes(gzip.compress(b"label," + b"x" * (5 << 20)))
    with pytest.raises(InputError, match=r"header\.csv\.gz: the header line is longer than "
                                         r"4194304 bytes"):
        read_all(str(path))


@pytest.mark.parametrize("name", ["t.csv", "t.parquet"])
def test_pixel_columns_are_matched_by_number(tmp_path: Path, name: str) -> None:
    pixels, labels = table_data(n=9)
    ordered = table_frame(pixels, labels)
    shuffled = ordered[list(np.random.default_rng(5).permutation(ordered.columns))].copy()
    shuffled.insert(3, "note", "scan")  # an extra, non-numeric column is ignored
    shuffled.insert(0, "id", np.arange(9) * 7)
    write = (lambda f, p: f.to_parquet(p, index=False)) if name.endswith("parquet") else (
        lambda f, p: f.to_csv(p, index=False))
    write(shuffled, tmp_path / name)
    source, chunks = read_all(str(tmp_path / name), chunk_rows=4)
    assert source.columns == tuple(f"pixel{i}" for i in range(16))
    np.testing.assert_array_equal(np.concatenate([c.pixels for c in chunks]), pixels)
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), labels)

    write(ordered.drop(columns="pixel7"), tmp_path / name)
    with pytest.raises(InputError, match=r"go up to pixel15 but pixel7 is missing"):
        read_all(str(tmp_path / name))
