"""``tbpipe predict`` / ``batch_predict`` read a remote image bounded, before decoding it."""

import io

import numpy as np
import pytest
from PIL import Image

from tbpipe.components.common import serving, storage
from tbpipe.components.common.errors import InputError


def png_bytes() -> bytes:
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("store", [pytest.param("s3", marks=pytest.mark.s3),
                                   pytest.param("gcs", marks=pytest.mark.gcs)])
def test_a_remote_image_is_read_at_most_its_bound(store, request, tmp_path, monkeypatch):
    root = request.getfixturevalue(f"{store}_root")
    png = png_bytes()
    uri = storage.join(root, "digits", "seven.png")
    storage.write_bytes(uri, png)
    local = tmp_path / "seven.png"
    local.write_bytes(png)
    # the store answers a ranged read: at most max_bytes + 1 bytes come back
    assert storage.read_bytes(uri, max_bytes=10) == png[:11]
    assert storage.read_bytes(str(local), max_bytes=10) == png[:11]
    assert storage.read_bytes(uri, max_bytes=len(png)) == png
    empty = storage.join(root, "digits", "empty.png")
    storage.write_bytes(empty, b"")
    assert storage.read_bytes(empty, max_bytes=10) == b""

    monkeypatch.setattr(serving, "MAX_IMAGE_BYTES", len(png))  # exactly fits: decoded
    got = serving.read_image(uri, (8, 8, 1))
    assert np.array_equal(got, serving.read_image(str(local), (8, 8, 1)))
    monkeypatch.setattr(serving, "MAX_IMAGE_BYTES", len(png) - 1)  # one byte over: refused
    with pytest.raises(InputError) as refused:
        serving.read_image(uri, (8, 8, 1))
    line = str(refused.value)
    assert line.startswith(f"{uri}: more than {len(png) - 1} bytes, the most predict reads")
    assert "\n" not in line
