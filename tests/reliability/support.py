"""Shared pieces of the reliability suite: bad inputs, the CLI, and what a failure must leave.

Every bad input is a :class:`Case`: a builder that writes it under a folder and returns the
URI to pass, and the fragments the one error line must hold (besides the URI itself, which
every line must name). The same cases run at the component level and through the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd

from tests.helpers import TBPIPE, synthetic_images

REPO = Path(__file__).resolve().parents[2]
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801
ERROR_LINE = re.compile(r"^tbpipe\b.*\berror\b")


@dataclasses.dataclass(frozen=True)
class Case:
    """A bad input: ``build(folder) -> uri`` and regexes its error line must match."""

    build: Callable[[Path], str]
    needles: tuple[str, ...]
    names_uri: bool = True


# ---- tables -------------------------------------------------------------------------------

def frame(n: int = 24, side: int = 4, classes: int = 3, seed: int = 0) -> pd.DataFrame:
    """A good ``label,pixel0,...`` table with bytes 0..255 (square ``side`` x ``side``)."""
    images, labels = synthetic_images(n, (side, side, 1), classes, seed)
    pixels = np.rint(images * 255).astype(np.int64).reshape(n, -1)
    table = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(side * side)])
    table.insert(0, "label", labels)
    return table


def write_table(path: Path, table: pd.DataFrame) -> str:
    """Write ``table`` as CSV (``.csv``/``.csv.gz``) or Parquet (``.parquet``/``.pq``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".parquet", ".pq"):
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    return str(path)


def _table(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], str]:
    return lambda folder: write_table(folder / name, change(frame()))


def _bytes(name: str, data: bytes) -> Callable[[Path], str]:
    def build(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return str(folder / name)
    return build


def _non_numeric(table: pd.DataFrame) -> pd.DataFrame:
    table = table.astype({"pixel3": str})
    table.loc[5, "pixel3"] = "dark"
    return table


def _set(column: str, values: Callable[[pd.DataFrame], object]) -> Callable:
    def change(table: pd.DataFrame) -> pd.DataFrame:
        table = table.astype({column: np.float64})
        table[column] = values(table)
        return table
    return change


def _pixels_nan(table: pd.DataFrame) -> pd.DataFrame:
    table = table.astype(np.float64)
    table["pixel0"] = np.nan
    return table


def _dir(name: str) -> Callable[[Path], str]:
    def build(folder: Path) -> str:
        (folder / name).mkdir(parents=True)
        return str(folder / name)
    return build


# ---- MNIST IDX ----------------------------------------------------------------------------

def idx_bytes(magic: int, dims: tuple[int, ...], body: bytes) -> bytes:
    """An IDX file: big-endian magic, sizes, then the bytes."""
    return magic.to_bytes(4, "big") + np.array(dims, ">u4").tobytes() + body


def idx_folder(folder: Path, n: int = 24, n_labels: int | None = None, side: int = 4,
               image_magic: int = IDX_IMAGES, cut: int = 0, gz: bool = False) -> str:
    """Write ``train-{images,labels}`` IDX files (optionally damaged) into ``folder``.

    Args:
        folder: Where the files go.
        n: Images (and, unless ``n_labels``, labels).
        n_labels: Labels, when they should disagree with the images.
        side: Image side.
        image_magic: The images file's magic number.
        cut: Bytes cut off the end of the images file (a truncated download).
        gz: Write ``.gz`` files.

    """
    images, labels = synthetic_images(n, (side, side, 1), 3, 0)
    pixels = np.rint(images * 255).astype(np.uint8).tobytes()
    n_labels = n if n_labels is None else n_labels
    files = {"train-images-idx3-ubyte": idx_bytes(image_magic, (n, side, side), pixels),
             "train-labels-idx1-ubyte": idx_bytes(IDX_LABELS, (n_labels,),
                                                  np.resize(labels, n_labels).astype(np.uint8)
                                                  .tobytes())}
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        data = data[:max(len(data) - cut, 3)] if cut and "images" in name else data
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return str(folder)


def _truncated_gzip_csv(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(frame(n=400).to_csv(index=False).encode())
    (folder / "table.csv.gz").write_bytes(data[:len(data) // 2])
    return str(folder / "table.csv.gz")


def _truncated_gz(folder: Path) -> str:
    idx_folder(folder, gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    return str(folder)


def _fifo(name: str) -> Callable[[Path], str]:
    """A named pipe with no writer: opening it for reading would block forever."""
    def build(folder: Path) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        os.mkfifo(folder / name)
        return str(folder / name)
    return build


def _fifo_in_idx(folder: Path) -> str:
    idx_folder(folder)
    (folder / "train-labels-idx1-ubyte").unlink()
    os.mkfifo(folder / "train-labels-idx1-ubyte")
    return str(folder)


def _idx_claiming(folder: Path, gz: bool = False) -> str:
    """An images file whose header claims 10^12 bytes (10^6 images of 1000x1000)."""
    idx_folder(folder, gz=gz)
    data = idx_bytes(IDX_IMAGES, (10**6, 1000, 1000), bytes(4096))
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    (folder / name).write_bytes(gzip.compress(data) if gz else data)
    return str(folder)


def _gz_stream(folder: Path, change: Callable[[bytes], bytes]) -> str:
    """``.gz`` IDX files whose images stream is cut or extended (the gzip itself is whole)."""
    idx_folder(folder, gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))
    return str(folder)


def _long_line(folder: Path) -> str:
    """A 16-pixel CSV whose second data row is one 50 MB line."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "long.csv"
    with open(path, "wb") as handle:
        handle.write(frame(n=1).to_csv(index=False).encode())
        handle.write(b"1,")
        for _ in range(50):
            handle.write(b"7" * (1 << 20))
        handle.write(b"\n")
    return str(path)


def _mixed_scales(table: pd.DataFrame) -> pd.DataFrame:
    table = table.astype(np.float64)
    pixels = [c for c in table.columns if c.startswith("pixel")]
    table.loc[table.index[12:], pixels] /= 255.0
    return table


# ---- the cases ----------------------------------------------------------------------------

DATA_CASES: dict[str, Case] = {
    "missing": Case(lambda f: str(f / "nowhere.csv"), (r"no such file",)),
    "a-folder-where-a-table-is-expected": Case(
        _dir("table.csv"), (r"folder without train-images-idx3-ubyte", r"use a \.csv")),
    "empty-csv": Case(_bytes("empty.csv", b""), (r"not a readable CSV table",
                                            r"write it as label,pixel0")),
    "empty-parquet": Case(_bytes("empty.parquet", b""), (r"not a readable Parquet file",)),
    "header-only-csv": Case(_bytes("rows.csv", b"label,p0,p1,p2,p3\n"),
                            (r"has no rows", r"give a table with labelled images")),
    "corrupt-gzip-csv": Case(_bytes("table.csv.gz", b"\x1f\x8b\x08\x00garbage" * 5),
                             (r"not a readable CSV table|malformed CSV",)),
    "truncated-gzip-csv": Case(_truncated_gzip_csv, (r"not a readable CSV table|malformed CSV",)),
    "unknown-format": Case(_bytes("table.txt", b"label,p0\n1,2\n"),
                           (r"unknown data format", r"use a \.csv")),
    "no-label-column": Case(_table("nolabel.csv", lambda t: t.drop(columns="label")),
                            (r"no 'label' column", r"needs a 'label' column")),
    "non-numeric-pixels": Case(_table("text.csv", _non_numeric),
                               (r"column 'pixel3' is not numeric", r"'dark'", r"must be numbers")),
    "non-numeric-parquet": Case(_table("text.parquet", _non_numeric),
                                (r"column 'pixel3' has type", r"must be numeric")),
    "not-a-square": Case(_table("wide.csv", lambda t: t.drop(columns="pixel15")),
                         (r"15 pixel columns is not a square image", r"pass image_shape")),
    # at most 1024 classes (common/limits.py MAX_CLASSES; the confusion matrix is its square)
    "label-above-1023": Case(_table("big.csv", _set("label", lambda t: np.arange(len(t)) + 1020)),
                             (r"label 1024 is above 1023 \(row 5,", r"class numbers 0\.\.1023")),
    "all-labels-negative": Case(_table("neg.csv", _set("label", lambda t: -1.0)),
                                (r"label -1 \(row 1, column 'label'\) is not a class number",
                                 r"fix or remove the row")),
    "single-class": Case(_table("one.csv", _set("label", lambda t: 2)),
                         (r"only class 2 is present", r"at least 2 classes")),
    "nan-in-every-row": Case(_table("nan.csv", _pixels_nan),
                             (r"all 24 rows were dropped", r"'missing': 24", r"fix missing")),
    "idx-wrong-magic": Case(lambda f: idx_folder(f / "mnist", image_magic=0x00000801),
                            (r"IDX magic 0x00000801, expected 0x00000803",
                             r"check the file name")),
    "idx-truncated": Case(lambda f: idx_folder(f / "mnist", cut=10),
                          (r"the header says", r"truncated or damaged")),
    "idx-header-only": Case(lambda f: idx_folder(f / "mnist", cut=10_000),
                            (r"too short for an IDX header", r"re-download")),
    "idx-counts-differ": Case(lambda f: idx_folder(f / "mnist", n_labels=20),
                              (r"24 images but .* has 20 labels", r"use matching IDX files")),
    "idx-truncated-gz": Case(lambda f: _truncated_gz(f / "mnist"),
                             (r"cannot read IDX|ends early", r"re-download")),
    # inputs bounded: only regular files; IDX claims held to the file; CSV lines bounded
    "fifo-as-data": Case(_fifo("data.csv"), (r"is a FIFO \(named pipe\), not a regular file",
                                             r"copy the data to a file")),
    "fifo-in-idx-folder": Case(lambda f: _fifo_in_idx(f / "mnist"),
                               (r"train-labels-idx1-ubyte: is a FIFO", r"not a regular file")),
    "idx-claims-10-to-the-12": Case(lambda f: _idx_claiming(f / "mnist"),
                                    (r"header says \(1000000, 1000, 1000\)", r"truncated")),
    "idx-gz-claims-10-to-the-12": Case(
        lambda f: _idx_claiming(f / "mnist", gz=True),
        (r"header says \(1000000, 1000, 1000\) .* cannot hold that much", r"re-download")),
    "idx-gz-stream-shorter": Case(lambda f: _gz_stream(f / "mnist", lambda d: d[:-7]),
                                  (r"ends early", r"re-download")),
    "idx-gz-stream-longer": Case(lambda f: _gz_stream(f / "mnist", lambda d: d + bytes(9)),
                                 (r"data after the 24 records", r"re-download")),
    "csv-50-mb-line": Case(_long_line, (r"line 3 is longer than 65536 bytes",
                                        r"lost its line ends")),
    # data that means something else: refused, never trained on
    "label-fraction": Case(_table("frac.csv", _set("label", lambda t: np.arange(len(t)) % 3
                                                   + (np.arange(len(t)) == 9) * 0.5)),
                           (r"label 0\.5 \(row 10, column 'label'\) is not a class number",)),
    "label-minus-one": Case(_table("minus.csv", _set("label", lambda t: np.where(
        np.arange(len(t)) == 4, -1, np.arange(len(t)) % 3))),
        (r"label -1 \(row 5, column 'label'\) is not a class number",)),
    "label-nan": Case(_table("nan-label.csv", _set("label", lambda t: np.where(
        np.arange(len(t)) == 6, np.nan, np.arange(len(t)) % 3))),
        (r"label nan \(row 7, column 'label'\) is missing",)),
    "mixed-pixel-scales": Case(_table("mixed.csv", _mixed_scales),
                               (r"row 13 holds only values in \[0, 1\] with fractions",
                                r"use one scale")),
}


# ---- running and checking -----------------------------------------------------------------

def cli(*args: str, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``python -m tbpipe.pipelines.cli.main ARGS`` from the repository root."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([*TBPIPE, *args], cwd=REPO,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess | str, *needles: str,
                   code: int | None = None) -> str:
    """Assert a failed CLI run: non-zero exit, one ``tbpipe...error`` line, no traceback.

    Returns the error line; each of ``needles`` (regexes) must be found in it.
    """
    if isinstance(proc, subprocess.CompletedProcess):
        assert proc.returncode != 0, proc.stdout[-2000:]
        if code is not None:
            assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-4000:]
        err = proc.stderr
    else:
        err = proc
    lines = [line for line in err.splitlines() if ERROR_LINE.match(line)]
    assert len(lines) == 1, err[-3000:]
    for needle in needles:
        assert re.search(needle, lines[0]), (needle, lines[0])
    return lines[0]


def tree_digest(path: Path) -> str:
    """A digest of every file's relative path and bytes under ``path`` ('' if absent)."""
    if not path.exists():
        return ""
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(path)).encode() + b"\0" + item.read_bytes())
    return digest.hexdigest()


def logged_files(log_root: Path) -> list[str]:
    """What a step wrote under its log root besides the run's claim and its error line.

    A step claims its run before it reads its inputs (run_claim.py): a failed step leaves
    the claim (``_run.json``), so a later run of another job cannot take the name unnoticed,
    and its error line (``_errors/{step}.json``, what the run's outcome report names; the
    line is checked to be the step's one error line), and nothing else.
    """
    if not log_root.exists():
        return []
    for record in log_root.glob("*/*/_errors/*.json"):
        line = json.loads(record.read_text())["line"]
        assert line and "\n" not in line and "Traceback" not in line, record
    return sorted(str(p.relative_to(log_root)) for p in log_root.rglob("*")
                  if p.is_file() and p.name != "_run.json" and p.parent.name != "_errors")


def whole_outputs(root: Path) -> list[str]:
    """Outputs under ``root`` that look whole (a Dataset, a Model, a report) or half-written.

    A failed step must leave none: temporary names (``*.partial``) are removed too.
    """
    if not root.exists():
        return []
    names = ("dataset.json", "model.json", "model.keras", "report")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.name in names or ".partial" in p.name)


@contextlib.contextmanager
def forbidding_storage() -> Iterator[str]:
    """A STAND-IN for GCS that answers every request 403, as GCS does without IAM access.

    The emulator has no IAM, so "no permission" is simulated by this tiny server; point
    ``STORAGE_EMULATOR_HOST`` at the endpoint it yields.
    """
    body = json.dumps({"error": {"code": 403, "message": "caller does not have "
                                 "storage.objects.get access", "errors": []}}).encode()

    class Forbid(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forbid)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
