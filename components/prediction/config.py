"""Settings of the batch-predict step, checked once when built, and what it returns (no numpy)."""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.limits import check_count

#: The formats batch prediction writes (``tbpipe predict --output`` adds ``json`` and ``text``).
OUTPUT_FORMATS = ("parquet", "csv")


@dataclasses.dataclass(frozen=True)
class BatchPredictConfig:
    """Settings of the batch-predict step.

    Attributes:
        top_k: Classes per image, most probable first (at most the model's classes).
        batch_size: Images read and predicted at once: memory is bounded by it, not by the
            number of images.
        output_format: ``parquet`` or ``csv`` (OUTPUT_FORMATS).
        path_column: In a CSV or Parquet list of images, the column holding the paths/URIs.
        read_threads: Threads reading and decoding the images of a batch.
        run_label: ``{experiment}/{run}``.

    """

    top_k: int = 3
    batch_size: int = 256
    output_format: str = "parquet"
    path_column: str = "path"
    read_threads: int = 4
    run_label: str = ""

    def __post_init__(self) -> None:
        """SettingError for a non-positive count, an unknown format or an empty column."""
        check_count("top_k", self.top_k)
        check_count("batch_size", self.batch_size)
        check_count("read_threads", self.read_threads)
        if self.output_format not in OUTPUT_FORMATS:
            raise SettingError("output_format", self.output_format,
                               f"must be one of {', '.join(OUTPUT_FORMATS)}")
        if not self.path_column:
            raise SettingError("path_column", self.path_column,
                               "must name the column of image paths, e.g. path")


@dataclasses.dataclass(frozen=True)
class BatchPredictResult:
    """What a batch prediction did.

    Attributes:
        images: Images listed.
        failed: Images that could not be read (a row with ``error`` each).
        seconds: Wall time of reading, predicting and writing.
        class_counts: Top-1 class name -> images predicted as it.
        model_uri: The Model folder used (a promotion folder resolves to its version).
        output_uri: Where the predictions went.

    """

    images: int
    failed: int
    seconds: float
    class_counts: dict[str, int]
    model_uri: str
    output_uri: str

    @property
    def images_per_s(self) -> float:
        """Throughput, reading and writing included."""
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line for the logs and the CLI."""
        return (f"{self.images} images ({self.failed} unreadable) in {self.seconds:.1f} s, "
                f"{self.images_per_s:.0f} images/s -> {self.output_uri}")
