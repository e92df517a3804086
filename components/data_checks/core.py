"""Check the preprocessed data before training: leakage, health, the champion, drift.

On the run's train/val/test Datasets (and, with a champion, its model, the data it was
trained on and its test set), :func:`check_datasets` finds:

- test images that are exact or near copies of training images (leakage: the test accuracy
  would be measured partly on what the model learned by heart), by exact keys and 64-bit
  perceptual hashes (:mod:`.hashing`);
- empty images (one value everywhere), files preprocess could not decode (its ``stats``),
  a training split whose largest class outnumbers its smallest more than ``max_imbalance``
  times, or with a class of no example;
- against the champion: a different label set or image shape, a class distribution that
  moved (total variation distance above :data:`MAX_CLASS_SHIFT`), training images copied
  from its test set (the gate would score the new model on what it trained on), and drift
  (:mod:`.drift`: MMD on the champion's penultimate-layer embeddings, per-channel pixel
  statistics).

Every finding beyond a note is a violation: ``warn`` logs them, ``strict`` fails the step
with one line listing them (after the reports are written). Memory: 16 bytes per image
(its two hashes) plus one shard at a time, the drift samples and the hash comparison's
chunk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np

from tbpipe.components.common import storage
from tbpipe.components.common.dataset import DatasetInfo, iter_shards, read_info
from tbpipe.components.common.errors import InputError
from tbpipe.components.data_checks.config import DataChecksConfig, DataChecksResult
from tbpipe.components.data_checks.drift import ChannelStats, mmd_permutation_test
from tbpipe.components.data_checks.hashing import exact_keys, matches, perceptual_hashes
from tbpipe.components.data_checks.report import (
    Findings,
    log_findings,
    render_html,
    render_markdown,
)

#: The total variation distance between the champion's class distribution and the new one
#: above which the change is a violation (0: the same shares, 1: no class in common).
MAX_CLASS_SHIFT = 0.25
#: Pairs of copies listed in the report (all are counted).
LISTED_PAIRS = 20


class DataCheckFailed(InputError):
    """Strict mode and at least one violation: the step fails with the list of them."""


@dataclasses.dataclass
class _Scan:
    """One split, read once: its hashes, labels, empty images and channel statistics."""

    info: DatasetInfo
    keys: np.ndarray
    hashes: np.ndarray | None
    labels: np.ndarray
    empty: int
    channels: ChannelStats


def _scan(local: str, hashed: bool) -> _Scan:
    info = read_info(local)
    keys, hashes, labels, empty = [], [], [], 0
    channels = ChannelStats(info.image_shape[-1])
    for images, truth in iter_shards(local):
        keys.append(exact_keys(images))
        if hashed:
            hashes.append(perceptual_hashes(images))
        flat = images.reshape(len(images), -1)
        empty += int(np.sum(flat.min(axis=1) == flat.max(axis=1))) if len(flat) else 0
        labels.append(truth)
        channels.add(images)
    return _Scan(info, _joined(keys, np.uint64),
                 _joined(hashes, np.uint64) if hashed else None, _joined(labels, np.int32),
                 empty, channels)


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def sample_images(local: str, count: int, seed: int) -> np.ndarray:
    """Up to ``count`` images of a local Dataset drawn without replacement (seeded), uint8."""
    info = read_info(local)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(info.num_examples, size=min(count, info.num_examples),
                                replace=False))
    out, offset = [], 0
    for images, _ in iter_shards(local):
        here = chosen[(chosen >= offset) & (chosen < offset + len(images))] - offset
        out.append(images[here])
        offset += len(images)
    return np.concatenate(out) if out else np.zeros((0, *info.image_shape), np.uint8)


def check_datasets(train_uri: str, val_uri: str, test_uri: str, report_uri: str, html_uri: str,
               log_dir: str, config: DataChecksConfig, champion_uri: str = "",
               preprocess_stats: dict[str, float] | None = None) -> DataChecksResult:
    """Check the run's Datasets (and against the champion); write the reports and the logs.

    Args:
        train_uri: The training Dataset (preprocess's ``train_data``).
        val_uri: The validation Dataset.
        test_uri: The test Dataset.
        report_uri: Where the Markdown report goes.
        html_uri: Where the HTML report goes.
        log_dir: ``{log_root}/{experiment}/{run}/check-data``.
        config: The settings (``mode``: warn, strict or off).
        champion_uri: The champion's Model folder (a version of ``--promote-to``); empty:
            none, the checks against it are skipped.
        preprocess_stats: preprocess's ``stats`` metrics (``unreadable_files``...).

    Returns:
        What was found; in ``warn`` mode, violations included.

    Raises:
        DataCheckFailed: ``strict`` and a violation (one line listing them all); the
            reports and logs are written first.
        InputError: a folder that is not a tbpipe Dataset.

    """
    if config.mode == "off":
        findings = Findings(config=config, notes=["data checks off (--data-checks off)"])
        result = DataChecksResult(mode="off", notes=tuple(findings.notes))
    else:
        findings = _find(train_uri, val_uri, test_uri, config, champion_uri,
                         preprocess_stats or {})
        result = findings.result()
    with open_writer_for(log_dir) as writer:
        log_findings(writer, findings, result)
    storage.write_bytes(report_uri, render_markdown(findings, result).encode("utf-8"))
    storage.write_bytes(html_uri, render_html(findings, result).encode("utf-8"))
    for line in result.violations:
        print(f"check-data: violation: {line}")
    print(f"check-data: {result.line()}")
    if config.mode == "strict" and result.violations:
        raise DataCheckFailed(f"--data-checks strict: {'; '.join(result.violations)}; fix the "
                              "data (or run with --data-checks warn)")
    return result


def champion_of(promote_to: str) -> str:
    """The Model folder the registry ``promote_to`` serves; empty: no registry or no model yet."""
    if not promote_to:
        return ""
    from tbpipe.components.promotion.publish import current_model

    return current_model(promote_to)


def open_writer_for(log_dir: str):  # noqa: ANN201
    """The step's TensorBoard writer (imported here: a writer needs tensorboardX)."""
    from tbpipe.components.common.tensorboard.writer import open_writer

    return open_writer(log_dir)


def _find(train_uri: str, val_uri: str, test_uri: str, config: DataChecksConfig,
          champion_uri: str, preprocess_stats: dict[str, float]) -> Findings:
    findings = Findings(config=config)
    with contextlib.ExitStack() as stack:
        local = {name: stack.enter_context(storage.local_input(uri))
                 for name, uri in (("train", train_uri), ("val", val_uri), ("test", test_uri))}
        shape = read_info(local["train"]).image_shape
        hashed = min(shape[0], shape[1]) >= config.min_hash_side
        if not hashed:
            findings.notes.append(
                f"images are {shape[0]}x{shape[1]}, below {config.min_hash_side} pixels a "
                "side: too small for a perceptual hash to tell a copy from another image of "
                "the class; exact copies only")
        scans = {name: _scan(path, hashed) for name, path in local.items()}
        findings.scans = scans
        _leakage(findings, scans, hashed, config)
        _health(findings, scans, preprocess_stats, config)
        if champion_uri:
            _against_champion(findings, champion_uri, local["train"], scans, hashed, config)
        else:
            findings.notes.append("no champion (--promote-to holds no model yet): label "
                                  "set, class shift, drift and its test set not checked")
    return findings


def _leakage(findings: Findings, scans: dict[str, _Scan], hashed: bool,
             config: DataChecksConfig) -> None:
    train, test = scans["train"], scans["test"]
    if not len(test.keys) or not len(train.keys):
        findings.notes.append("an empty train or test split: no leakage to check")
        return
    exact, near, distance, where = matches(test.keys, test.hashes if hashed else test.keys,
                                           train.keys, train.hashes if hashed else train.keys,
                                           config.near_distance if hashed else None)
    findings.exact_duplicates, findings.near_duplicates = int(exact.sum()), int(near.sum())
    findings.nearest_distance = distance if hashed else None
    for k in np.flatnonzero(exact | near)[:LISTED_PAIRS]:  # exact: its key's position
        findings.pairs.append((int(k), int(where[k]), int(distance[k]) if near[k] else 0,
                               "exact" if exact[k] else "near"))
    if findings.exact_duplicates or findings.near_duplicates:
        near_text = (f" and {findings.near_duplicates} near copies (perceptual hashes within "
                     f"{config.near_distance} bits)" if hashed else "")
        findings.violations.append(
            f"{findings.exact_duplicates} test images are exact copies of training images"
            f"{near_text}: the test split leaks training data")


def _health(findings: Findings, scans: dict[str, _Scan], preprocess_stats: dict[str, float],
            config: DataChecksConfig) -> None:
    findings.empty_images = sum(scan.empty for scan in scans.values())
    if findings.empty_images:
        where = ", ".join(f"{name} {scan.empty}" for name, scan in scans.items() if scan.empty)
        findings.violations.append(f"{findings.empty_images} empty images (one value "
                                   f"everywhere: {where})")
    unreadable = int(preprocess_stats.get("unreadable_files", 0))
    if unreadable:
        findings.violations.append(f"{unreadable} files could not be decoded (preprocess "
                                   "skipped them)")
    counts = np.asarray(scans["train"].info.class_counts, dtype=np.int64)
    names = scans["train"].info.class_names
    if counts.size and counts.sum():
        missing = [names[k] for k in np.flatnonzero(counts == 0)]
        if missing:
            findings.violations.append(f"classes with no training example: "
                                       f"{', '.join(missing[:10])}")
        present = np.flatnonzero(counts > 0)
        most, least = present[counts[present].argmax()], present[counts[present].argmin()]
        findings.imbalance = float(counts[most] / counts[least])
        if findings.imbalance > config.max_imbalance:
            findings.violations.append(
                f"class imbalance {findings.imbalance:.1f}:1 in the training split "
                f"({names[most]} {counts[most]}, {names[least]} {counts[least]}), above "
                f"{config.max_imbalance:g}:1")


def _against_champion(findings: Findings, champion_uri: str, local_train: str,
                      scans: dict[str, _Scan], hashed: bool, config: DataChecksConfig) -> None:
    from tbpipe.components.common.model_format import class_names, read_model_meta
    from tbpipe.components.promotion.publish import VERSION_FILE

    meta = read_model_meta(champion_uri)
    findings.champion = champion_uri
    info = scans["train"].info
    theirs = tuple(class_names(meta, int(meta["num_classes"])))
    findings.champion_classes = theirs
    if theirs != info.class_names:
        new, gone = sorted(set(info.class_names) - set(theirs)), sorted(set(theirs) -
                                                                        set(info.class_names))
        what = "; ".join(filter(None, [f"new: {', '.join(new[:10])}" if new else "",
                                       f"missing: {', '.join(gone[:10])}" if gone else ""]))
        findings.violations.append(f"the label set differs from the champion's "
                                   f"({what or 'the same names in another order'})")
    if tuple(meta.get("image_shape", ())) != tuple(info.image_shape):
        findings.violations.append(f"images are {list(info.image_shape)}, the champion takes "
                                   f"{list(meta.get('image_shape', []))}")
        return  # neither its model nor its data can be compared with these images
    version = _read_json(storage.join(champion_uri, VERSION_FILE))
    champion_train = storage.artifact_uri(str(meta.get("train_data", "")))
    if champion_train and storage.exists(champion_train):
        with storage.local_input(champion_train) as local:
            _class_shift(findings, read_info(local), info)
            champion_scan = _scan(local, hashed=False)
            findings.champion_channels = champion_scan.channels
            _drift(findings, champion_uri, local, local_train, config)
    else:
        findings.notes.append(f"the champion's training data ({champion_train or 'not recorded'}"
                              ") cannot be read: class shift and drift not checked")
    champion_test = storage.artifact_uri(str(version.get("test_data", "")))
    if champion_test and storage.exists(champion_test):
        with storage.local_input(champion_test) as local:
            theirs_test = _scan(local, hashed)
        train = scans["train"]
        exact, near, _, _ = matches(train.keys, train.hashes if hashed else train.keys,
                                 theirs_test.keys,
                                 theirs_test.hashes if hashed else theirs_test.keys,
                                 config.near_distance if hashed else None)
        findings.champion_test_duplicates = int(exact.sum() + near.sum())
        if findings.champion_test_duplicates:
            findings.violations.append(
                f"{findings.champion_test_duplicates} training images are copies of the "
                "champion's test images (exact or near): comparisons with it would be unfair")
    else:
        findings.notes.append("the champion's test set is not recorded or cannot be read: "
                              "copies of it not checked")


def _read_json(uri: str) -> dict:
    if not storage.exists(uri):
        return {}
    try:
        data = json.loads(storage.read_bytes(uri))
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _class_shift(findings: Findings, theirs: DatasetInfo, ours: DatasetInfo) -> None:
    old = dict(zip(theirs.class_names, theirs.class_counts, strict=True))
    new = dict(zip(ours.class_names, ours.class_counts, strict=True))
    names = sorted(set(old) | set(new))
    p = np.array([old.get(n, 0) for n in names], np.float64)
    q = np.array([new.get(n, 0) for n in names], np.float64)
    p, q = p / max(p.sum(), 1.0), q / max(q.sum(), 1.0)
    findings.champion_class_shares = dict(zip(names, p.tolist(), strict=True))
    findings.class_shift = float(0.5 * np.abs(p - q).sum())
    if findings.class_shift > MAX_CLASS_SHIFT:
        findings.violations.append(
            f"the class distribution moved from the champion's training data (total variation "
            f"{findings.class_shift:.2f} > {MAX_CLASS_SHIFT})")


def _drift(findings: Findings, champion_uri: str, local_theirs: str, local_ours: str,
           config: DataChecksConfig) -> None:
    from tbpipe.components.common.model_format import load_model_folder
    from tbpipe.components.data_checks.drift import penultimate_embeddings

    theirs = sample_images(local_theirs, config.drift_sample, config.seed)
    ours = sample_images(local_ours, config.drift_sample, config.seed + 1)
    if len(theirs) < 2 or len(ours) < 2:
        findings.notes.append("fewer than 2 images on a side: drift not checked")
        return
    model, _ = load_model_folder(champion_uri, compile=False)
    x = penultimate_embeddings(model, theirs)
    y = penultimate_embeddings(model, ours)
    mmd, p_value = mmd_permutation_test(x, y, config.drift_permutations, config.seed)
    findings.drift = (mmd, p_value, len(theirs), len(ours))
    findings.drift_samples = (theirs, ours)
    if p_value < config.drift_alpha:
        findings.notes.append(f"the data drifted from the champion's training data (MMD^2 "
                              f"{mmd:.4g}, p {p_value:.3g} < {config.drift_alpha:g})")
