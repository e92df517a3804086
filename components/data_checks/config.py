"""Settings of the check-data step, checked once when built, and what it returns (no numpy)."""

from __future__ import annotations

import dataclasses

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.limits import check_count, check_finite, check_seed
from tbpipe.components.common.params import DEFAULT_SEED, Param, ParamGroup
from tbpipe.components.evaluation.config import EvaluateConfig

#: ``--data-checks``: ``warn`` logs violations, ``strict`` fails the step on any, ``off``
#: checks nothing (the step passes straight through).
DATA_CHECK_MODES = ("warn", "strict", "off")
#: Bits of a perceptual hash (imagehash's 8x8 DCT hash).
HASH_BITS = 64


@dataclasses.dataclass(frozen=True)
class DataChecksConfig:
    """Settings of the check-data step.

    Attributes:
        mode: ``warn``, ``strict`` or ``off`` (DATA_CHECK_MODES).
        near_distance: Two images are near duplicates when their 64-bit perceptual hashes
            differ in at most this many bits (6: about 90 % of the bits equal; a resized,
            re-encoded or brightened copy stays within it, docs/data-checks.md).
        min_hash_side: Images smaller than this on either side are compared exactly only:
            a perceptual hash of a tiny image (8x8 digits) says too little to tell a copy
            from another image of the same class.
        max_imbalance: The largest ratio of the most to the least frequent class of the
            training split before it is a violation.
        drift_sample: Images drawn from each side (the champion's training data, the new
            training data) for the drift test; bounds its time and memory.
        drift_permutations: Permutations of the MMD test (its p-value's resolution).
        drift_alpha: The drift is significant when the test's p-value is below it.
        seed: Seeds the drift test's sample and permutations.
        tensorboard_url: The TensorBoard the report links to.
        run_label: ``{experiment}/{run}``, used to filter the TensorBoard link to this run.

    """

    mode: str = "warn"
    near_distance: int = 6
    min_hash_side: int = 16
    max_imbalance: float = 10.0
    drift_sample: int = 500
    drift_permutations: int = 200
    drift_alpha: float = 0.05
    seed: int = DEFAULT_SEED
    tensorboard_url: str = EvaluateConfig.tensorboard_url  # the parameter's one default
    run_label: str = ""

    def __post_init__(self) -> None:
        """SettingError for a mode, a distance, a sample or a significance out of range."""
        if self.mode not in DATA_CHECK_MODES:
            raise SettingError("mode", self.mode,
                               f"must be one of {', '.join(DATA_CHECK_MODES)}")
        check_count("near_distance", self.near_distance, low=0)
        if self.near_distance >= HASH_BITS:
            raise SettingError("near_distance", self.near_distance,
                               f"must be below {HASH_BITS} (the bits of a hash)")
        check_count("min_hash_side", self.min_hash_side)
        if check_finite("max_imbalance", self.max_imbalance) < 1.0:
            raise SettingError("max_imbalance", self.max_imbalance, "must be at least 1")
        check_count("drift_sample", self.drift_sample, low=2)
        check_count("drift_permutations", self.drift_permutations)
        if not 0.0 < check_finite("drift_alpha", self.drift_alpha) < 1.0:
            raise SettingError("drift_alpha", self.drift_alpha, "must be in (0, 1)")
        check_seed("seed", self.seed)


PARAMS = ParamGroup("check-data", (
    Param("data_checks", "checks of the preprocessed data before training (duplicates "
                         "between train and test, class balance, empty images, label set and "
                         "drift against the --promote-to champion): warn logs violations, "
                         "strict fails the run on any, off skips them",
          field="mode", choices=DATA_CHECK_MODES),
), config=DataChecksConfig)


@dataclasses.dataclass(frozen=True)
class DataChecksResult:
    """What the data checks found.

    Attributes:
        mode: The mode they ran in (``off``: nothing was checked).
        violations: One line per violation (strict fails on any).
        notes: What was checked and passed, or could not be checked, one line each.
        exact_duplicates: Test images whose pixels equal a training image's.
        near_duplicates: Other test images within ``near_distance`` bits of a training
            image's perceptual hash.
        champion_test_duplicates: Training images that are exact or near copies of images
            of the champion's test set.
        empty_images: Images (every split) whose pixels all have one value.
        drift_checked: Whether the drift test ran (there is a champion with its data).
        drift_mmd: The squared MMD between the champion's and the new training data's
            penultimate-layer embeddings (0 when not checked).
        drift_p_value: Its permutation p-value; 1.0 when not checked (no evidence of drift).
        drifted: ``drift_p_value < drift_alpha``.

    """

    mode: str
    violations: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    exact_duplicates: int = 0
    near_duplicates: int = 0
    champion_test_duplicates: int = 0
    empty_images: int = 0
    drift_checked: bool = False
    drift_mmd: float = 0.0
    drift_p_value: float = 1.0
    drifted: bool = False

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics (booleans as 0/1) for KFP Metrics artifacts."""
        names = ("exact_duplicates", "near_duplicates", "champion_test_duplicates",
                 "empty_images", "drift_mmd", "drift_p_value", "drifted")
        return {"violations": float(len(self.violations)),
                **{name: float(getattr(self, name)) for name in names}}

    def line(self) -> str:
        """The step's one line: ``2 violations: ...`` or ``no violations (drift p 0.41)``."""
        drift = f"drift p {self.drift_p_value:.3g}" if self.drift_checked else "no champion"
        if self.mode == "off":
            return "data checks off"
        if not self.violations:
            return f"no violations ({drift})"
        return (f"{len(self.violations)} violation{'s' if len(self.violations) > 1 else ''}: "
                f"{'; '.join(self.violations)} ({drift})")
