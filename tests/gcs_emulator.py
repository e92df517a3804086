"""gcp-storage-emulator as the tests run it, with its multipart upload parsing mended.

The emulator parses a multipart upload (gcsfs's one-request upload of a small object) with
Python's email parser, which takes a ``\\r`` before gcsfs's ``\\n--boundary`` for part of the
delimiter: an object whose last byte is 0x0D was stored one byte short, about one upload in
256 of binary data (a TFRecord segment ends in a CRC), and a test reading it back failed by
chance (a segment one byte short, a TensorBoard run missing its last points). Reading the
part up to the exact line ending its own headers used keeps every byte. This module is the
one place that touches the emulator's private parser, for the releases it was checked with;
with any other the emulator runs as it is.

    python tests/gcs_emulator.py [gcp-storage-emulator's arguments]
"""

from __future__ import annotations

import json
import sys

#: The gcp-storage-emulator releases whose ``server._read_data`` :func:`mend` wraps.
CHECKED = ">=2026.7,<2027"


def multipart_related(raw: bytes, content_type: str) -> dict:
    """A ``multipart/related`` upload's metadata (JSON part) and content (second part), exact.

    A delimiter starts a line; the line ending before it is the one its part's headers used
    (``\\r\\n``, or gcsfs's bare ``\\n``): exactly that is removed from the body, nothing more.
    """
    boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
    # Between the first delimiter and the closing one, each part starting with the rest of its
    # delimiter's line.
    parts = (b"\n" + raw).split(b"\n--" + boundary.encode())[1:-1]
    decoded = []
    for part in parts:
        newline = b"\r\n" if part.startswith(b"\r\n") else b"\n"
        headers, _, body = part[len(newline):].partition(newline * 2)
        if newline == b"\r\n" and body.endswith(b"\r"):  # its "\n" went with the split
            body = body[:-1]
        kind = "application/octet-stream"
        for line in headers.split(newline):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-type":
                kind = value.strip().split(";")[0]
        decoded.append((kind, body))
    (_, meta), (kind, content) = decoded[:2]
    return {"meta": json.loads(meta), "content": content, "content-type": kind}


def mend() -> bool:
    """Make the emulator's request parser keep every byte of a multipart upload; whether it
    did (False: an unchecked release, left as it is)."""
    from importlib.metadata import version

    from gcp_storage_emulator import server
    from packaging.specifiers import SpecifierSet

    if version("gcp-storage-emulator") not in SpecifierSet(CHECKED):
        return False
    original = server._read_data

    def read_data(request_handler, query):  # noqa: ANN001, ANN202 - the emulator's signature
        content_type = request_handler.headers.get("Content-Type") or ""
        if not content_type.startswith("multipart/related"):
            return original(request_handler, query)
        raw = server._decode_raw_data(server._read_raw_data(request_handler), request_handler)
        return multipart_related(raw, content_type) if raw else None

    server._read_data = read_data
    return True


if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    mend()
    main(sys.argv[1:])
