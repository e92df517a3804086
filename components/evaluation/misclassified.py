"""The misclassified test images an evaluation shows: picked while the test set streams.

:class:`MistakeSample` keeps, of every misclassified example seen so far, only the ``limit``
the model was most sure of (ties: the earlier example), each as a small thumbnail: memory is
``limit`` thumbnails whatever the size of the test set, and the same model and data give the
same pick. :func:`labeled_tiles` draws them with their labels for TensorBoard's image grid;
:func:`png_base64` encodes one for the HTML report. numpy and Pillow only.
"""

from __future__ import annotations

import base64
import dataclasses
import heapq
import io
from collections.abc import Sequence

import numpy as np

#: The most misclassified examples an evaluation keeps (report thumbnails, TensorBoard grid).
MAX_MISTAKES = 64
#: The longest side of a kept thumbnail, in pixels (larger images are scaled down).
THUMBNAIL_SIDE = 64
#: TensorBoard tiles are at least this wide (small images are scaled up, pixel for pixel).
_TILE_MIN = 56
_LABEL_HEIGHT = 12
_PAD = 3


@dataclasses.dataclass(frozen=True)
class Mistake:
    """One misclassified test example.

    Attributes:
        index: Its place in the test set (0-based, in shard order).
        true: Its class.
        predicted: The class the model gave it.
        confidence: The probability the model gave ``predicted``.
        thumbnail: The image as uint8 ``(h, w, C)``, at most ``THUMBNAIL_SIDE`` a side.

    """

    index: int
    true: int
    predicted: int
    confidence: float
    thumbnail: np.ndarray


class MistakeSample:
    """The ``limit`` most confident mistakes of a streamed evaluation, as thumbnails.

    Args:
        limit: How many to keep (0: none).
        side: The longest side of a thumbnail, in pixels.

    """

    def __init__(self, limit: int = MAX_MISTAKES, side: int = THUMBNAIL_SIDE) -> None:
        self.limit, self.side = limit, side
        self.total = 0  # misclassified examples seen
        self._heap: list[tuple[float, int, Mistake]] = []  # (confidence, -index, mistake)

    def add(self, images: np.ndarray, labels: np.ndarray, probs: np.ndarray,
            first_index: int) -> None:
        """Look at one batch: uint8 ``images`` (n, H, W, C), true ``labels``, ``probs``.

        ``first_index``: the test-set index of the batch's first example.
        """
        predicted = probs.argmax(axis=1)
        wrong = np.flatnonzero(predicted != labels)
        self.total += len(wrong)
        if not self.limit or not len(wrong):
            return
        confidence = probs[wrong, predicted[wrong]]
        for row in wrong[np.argsort(-confidence, kind="stable")]:
            key = (float(probs[row, predicted[row]]), -(first_index + int(row)))
            if len(self._heap) >= self.limit and key <= self._heap[0][:2]:
                break  # sorted: the rest of the batch is no surer
            mistake = Mistake(first_index + int(row), int(labels[row]), int(predicted[row]),
                              key[0], thumbnail(images[row], self.side))
            if len(self._heap) < self.limit:
                heapq.heappush(self._heap, (*key, mistake))
            else:
                heapq.heapreplace(self._heap, (*key, mistake))

    def mistakes(self) -> tuple[Mistake, ...]:
        """The kept mistakes, the surest first (ties: the earlier example)."""
        return tuple(m for *_, m in sorted(self._heap, key=lambda e: e[:2], reverse=True))


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """A uint8 ``(h, w, C)`` copy of ``image`` with its longest side at most ``side``.

    Images of 1, 3 (RGB) or 4 (RGBA) channels keep them; others keep their first channel.
    """
    image = np.asarray(image, dtype=np.uint8)
    if image.shape[2] not in (1, 3, 4):
        image = image[:, :, :1]
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image.copy()
    from PIL import Image

    picture = _to_pil(image)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = np.asarray(picture, dtype=np.uint8)
    return out.reshape(*out.shape[:2], image.shape[2])


def _to_pil(image: np.ndarray):  # noqa: ANN202 - a PIL.Image.Image
    from PIL import Image

    channels = image.shape[2]
    if channels == 1:
        return Image.fromarray(image[:, :, 0], "L")
    if channels == 3:
        return Image.fromarray(image, "RGB")
    if channels == 4:
        return Image.fromarray(image, "RGBA")
    raise ValueError(f"{channels} channels: make the thumbnail first (thumbnail())")


def png_base64(image: np.ndarray) -> str:
    """A uint8 ``(h, w, C)`` image as base64 PNG (for a ``data:image/png`` URL)."""
    buffer = io.BytesIO()
    _to_pil(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def labeled_tiles(mistakes: Sequence[Mistake], names: Sequence[str]) -> np.ndarray:
    """The mistakes as RGB tiles in [0, 1], ``(n, H, W, 3)``, each labelled ``true>predicted``.

    Images are scaled up pixel for pixel to at least ``_TILE_MIN`` wide; the label strip
    under each holds the true and the predicted class names (cut to fit).
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    h, w = mistakes[0].thumbnail.shape[:2]
    scale = max(1, -(-_TILE_MIN // max(h, w)))
    width = max(w * scale, _TILE_MIN) + 2 * _PAD  # white edges keep the tiles apart
    tiles = []
    for m in mistakes:
        picture = _to_pil(m.thumbnail).convert("RGB").resize((w * scale, h * scale),
                                                             Image.Resampling.NEAREST)
        tile = Image.new("RGB", (width, _PAD + h * scale + _LABEL_HEIGHT), "white")
        tile.paste(picture, ((width - w * scale) // 2, _PAD))
        draw = ImageDraw.Draw(tile)
        text = f"{names[m.true]}>{names[m.predicted]}"
        while len(text) > 1 and draw.textlength(text, font=font) > width - 2 * _PAD:
            text = text[:-1]
        draw.text((_PAD, _PAD + h * scale + 1), text, fill=(180, 0, 0), font=font)
        tiles.append(np.asarray(tile, dtype=np.float32) / 255.0)
    return np.stack(tiles)
