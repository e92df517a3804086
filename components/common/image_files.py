"""Image files read as they mean: the one decoder of preprocess (image folders) and predict.

Training and serving must see the same pixels for the same file, so both decode through
:func:`decode_image`: 16-bit images scaled to 8 bits (not clipped), EXIF orientation applied,
transparency composited onto black, CMYK made RGB, the first frame of a multi-frame file;
each conversion is named (``converted_*``). A file it cannot read as meant is skipped with
one reason (``unreadable_files``, ``skipped_too_large`` past ``limits.MAX_IMAGE_PIXELS``
pixels, checked from the header before decoding, ``skipped_pixels_of_unknown_range`` for
float or 32-bit pixels).
"""

from __future__ import annotations

import numpy as np

from tbpipe.components.common.limits import MAX_IMAGE_PIXELS

GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
UNREADABLE = "unreadable_files"
TOO_LARGE = "skipped_too_large"
UNKNOWN_RANGE = "skipped_pixels_of_unknown_range"
#: Why a file was skipped, in words, for an error line.
SKIP_REASONS = {UNREADABLE: "not an image file Pillow can read, or damaged",
                TOO_LARGE: f"more than {MAX_IMAGE_PIXELS} pixels",
                UNKNOWN_RANGE: "float or 32-bit pixels, whose range the file does not say"}
#: EXIF orientations that swap width and height (rotations by 90 or 270 degrees).
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION = 0x0112


def _open_image(path: str):  # noqa: ANN202 - PIL.Image.Image
    """Open ``path`` lazily (header only); ValueError for more than MAX_IMAGE_PIXELS pixels."""
    from PIL import Image

    image = Image.open(path)
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise _TooLarge(path)
    return image


class _TooLarge(Exception):  # noqa: N818 - a reason to skip a file, like Pillow's errors
    """An image whose header claims more than MAX_IMAGE_PIXELS pixels."""


class _UnknownRange(Exception):  # noqa: N818 - a reason to skip a file, like Pillow's errors
    """Pixels whose range the file does not say (float, 32-bit integers)."""


def _orientation(image) -> int:  # noqa: ANN001 - PIL.Image.Image
    try:
        return int(image.getexif().get(_ORIENTATION, 1) or 1)
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1


def _is_colour(image) -> bool:  # noqa: ANN001 - PIL.Image.Image
    if image.mode in ("P", "PA"):
        palette = np.asarray(image.getpalette() or [], np.int32)
        rgb = palette[:len(palette) - len(palette) % 3].reshape(-1, 3)
        return bool((rgb != rgb[:, :1]).any())
    return image.mode not in GRAY_MODES


_SKIPPABLE = (OSError, ValueError, SyntaxError, EOFError, _TooLarge)


def image_header(path: str) -> tuple[tuple[int, int], bool] | None:
    """((height, width) as shown, after EXIF orientation; is colour), or None if unreadable."""
    from PIL import Image

    try:
        with _open_image(path) as image:
            width, height = image.size
            if _orientation(image) in _TRANSPOSED:
                width, height = height, width
            return (height, width), _is_colour(image)
    except (*_SKIPPABLE, Image.DecompressionBombError):
        return None


def _to_8_bit(image, notes: list[str]):  # noqa: ANN001, ANN202 - PIL images
    """``image`` in an 8-bit mode, read as the file means it; ``notes`` get the conversions.

    Raises:
        _UnknownRange: pixels whose range the file does not say (float, 32-bit integers).

    """
    from PIL import Image

    mode = image.mode
    bits = 16 if mode in SIXTEEN_BIT_MODES else 0
    if mode == "I":  # 32-bit container: 16-bit PNG/TIFF data on some Pillow versions
        tag = getattr(image, "tag_v2", {}) or {}
        depth = tag.get(258, (0,)) if hasattr(tag, "get") else (0,)
        depth = depth[0] if isinstance(depth, tuple | list) and depth else depth
        bits = 16 if image.format == "PNG" or depth == 16 else 0
        if not bits:
            raise _UnknownRange(mode)
    if mode == "F":
        raise _UnknownRange(mode)
    if bits:
        values = np.array(image, dtype=np.uint32)  # a writable copy
        notes.append("converted_16_bit")
        # 65535 -> 255: round(v / 257), the inverse of 8-bit -> 16-bit (b * 257); in place,
        # one uint32 copy of the image at a time (4 bytes a pixel, not 16).
        values += 128
        values //= 257
        np.minimum(values, 255, out=values)
        return Image.fromarray(values.astype(np.uint8), "L")
    if mode == "CMYK":
        notes.append("converted_cmyk")
        return image.convert("RGB")
    transparent = (mode in ("RGBA", "LA", "La", "RGBa", "PA")
                   or (mode == "P" and "transparency" in image.info)
                   or (mode in ("L", "RGB") and "transparency" in image.info))
    if transparent:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        if (alpha < 255).any():
            notes.append("converted_transparency")
            black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
            return Image.alpha_composite(black, rgba).convert("RGB")
        return rgba.convert("RGB")
    return image


def decode_image(path: str, height: int, width: int,
                 channels: int) -> tuple[np.ndarray | None, list[str]]:
    """The image as uint8 (height, width, channels) and what was converted; None and why not.

    The second item names conversions (``converted_*``) for a decoded image, or the one
    reason (``skipped_*``, ``unreadable_files``) a file was skipped.
    """
    from PIL import Image, ImageOps

    notes: list[str] = []
    mode = "L" if channels == 1 else "RGB"
    try:
        with _open_image(path) as image:
            if getattr(image, "n_frames", 1) > 1:
                notes.append("converted_first_frame")
                image.seek(0)
            turned = _orientation(image) != 1
            if image.format == "JPEG" and image.mode in ("L", "RGB") and not turned:
                image.draft(mode, (width, height))  # decode at a reduced scale when it can
            if turned:
                notes.append("converted_exif_orientation")
                image = ImageOps.exif_transpose(image)
            colour = _is_colour(image)
            image = _to_8_bit(image, notes)
            if channels == 1 and colour:
                notes.append("converted_colour_to_gray")
            image = image.convert(mode)
            if image.size != (width, height):
                notes.append("converted_resized")
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            return np.asarray(image, np.uint8).reshape(height, width, channels), notes
    except _TooLarge:
        return None, [TOO_LARGE]
    except Image.DecompressionBombError:
        return None, [TOO_LARGE]
    except _UnknownRange:
        return None, [UNKNOWN_RANGE]
    except (OSError, ValueError, SyntaxError, EOFError):
        return None, [UNREADABLE]
