"""Settings of the preprocess step, checked once when built. No numpy or pandas here."""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.limits import check_count, check_finite, check_seed
from tbpipe.components.common.params import DEFAULT_SEED, Param, ParamGroup

#: The data sources ``--data`` and ``--finetune-data`` take.
DATA_FORMATS = ("a .csv, .csv.gz, .parquet or .pq table (a 'label' column and pixel0..N "
                "columns), a folder of MNIST IDX files, a folder of image folders (one per "
                "class), builtin:digits or builtin:mnist; a local path or a store URI "
                "(gs://, s3://, az://: any scheme fsspec knows)")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """How to clean and split the data.

    Attributes:
        val_fraction: Share of each class that goes to validation, in [0, 1).
        test_fraction: Share of each class that goes to test, in [0, 1); ignored when the
            source has its own test set (MNIST t10k files, builtin:mnist).
        seed: Seed of the split (non-negative); same seed and data give identical bytes.
        image_shape: (height, width, channels) of table rows; default: square, 1 channel.
        chunk_rows: Rows read and processed at a time (bounds peak memory).
        shard_records: Records per shard file of the output Datasets.
        image_size: ``"HxW"`` (e.g. ``"32x32"``) images of an image folder are resized to;
            ``""``: the most common size in the folder.
        channels: 1 (grayscale) or 3 (RGB) for an image folder; 0: 3 if any file is colour,
            else 1.

    """

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = DEFAULT_SEED
    image_shape: tuple[int, int, int] | None = None
    chunk_rows: int = 10_000
    shard_records: int = 50_000
    image_size: str = ""
    channels: int = 0

    def __post_init__(self) -> None:
        """SettingError for fractions outside [0, 1) or not finite, seeds numpy refuses, ...

        Whether every split gets rows depends on the data: preprocess checks it once the class
        counts are known.
        """
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= check_finite(name, value) < 1.0:
                raise SettingError(name, value, "must be in [0, 1), e.g. 0.1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise SettingError("val_fraction + test_fraction",
                               self.val_fraction + self.test_fraction,
                               "must be below 1 so rows are left for training")
        check_seed("seed", self.seed)
        for name in ("chunk_rows", "shard_records"):
            check_count(name, getattr(self, name))
        if self.image_shape is not None and (
                len(self.image_shape) != 3 or min(self.image_shape) < 1):
            raise SettingError("image_shape", self.image_shape,
                               "must be three positive ints (height, width, channels)")
        parse_image_size(self.image_size)
        if self.channels not in (0, 1, 3):
            raise SettingError("channels", self.channels,
                               "must be 1 (grayscale), 3 (RGB) or 0 (what the files are)")

    @property
    def image_hw(self) -> tuple[int, int] | None:
        """``image_size`` as (height, width), or None for the most common size."""
        return parse_image_size(self.image_size)


MAX_IMAGE_SIDE = 4096


def parse_image_size(text: str) -> tuple[int, int] | None:
    """``"32x32"`` -> (32, 32) (height x width); ``""`` -> None; SettingError otherwise."""
    if not text:
        return None
    parts = str(text).lower().replace(" ", "").split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or not all(
            1 <= int(p) <= MAX_IMAGE_SIDE for p in parts):
        raise SettingError("image_size", text,
                           f"must be HEIGHTxWIDTH with sides 1..{MAX_IMAGE_SIDE}, e.g. 32x32, "
                           "or empty for the most common size")
    return int(parts[0]), int(parts[1])


PARAMS = ParamGroup("preprocess", (
    Param("data", f"training data (default: builtin:digits): {DATA_FORMATS}", type=str,
          default="builtin:digits"),
    Param("finetune_data", "data to fine-tune on, in the same formats as --data (default: "
                           "none: fine-tune on --data)", type=str, default=""),
    Param("val_fraction", "share of each class that goes to validation, in [0, 1)"),
    Param("test_fraction", "share of each class that goes to test, in [0, 1)"),
    Param("image_size", "HxW an image folder's images are resized to (default: the most "
                        "common size)"),
    Param("channels", "1 (grayscale) or 3 (RGB) for an image folder; 0: what the files are"),
), config=PreprocessConfig)
