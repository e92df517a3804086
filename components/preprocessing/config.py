"""Settings of the preprocess step, checked once when built. No numpy or pandas here."""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.limits import check_count, check_finite, check_seed


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

    """

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 42
    image_shape: tuple[int, int, int] | None = None
    chunk_rows: int = 10_000
    shard_records: int = 50_000

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
