"""How the data checks are shown: a Markdown and an HTML report, TensorBoard text and histograms.

Both reports render the same blocks (:func:`report_blocks`), so they say the same things.
TensorBoard tags (step 0): ``data/violations`` scalar and text, ``data/report`` text,
``data/exact_duplicates``, ``data/near_duplicates``, ``data/champion_test_duplicates``,
``data/empty_images``, ``data/class_imbalance``, ``data/class_shift``, ``data/drift_mmd``,
``data/drift_p_value`` scalars; histograms ``data/labels/<split>`` (the labels),
``data/nearest_train_distance`` (each test image's bits to its nearest training image) and
``data/pixels/<new|champion>/channel_<k>`` (pixel values of the drift samples).
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

import numpy as np

from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.components.common.tensorboard.writer import markdown_table
from tbpipe.components.data_checks.config import DataChecksConfig, DataChecksResult

DATA_STEP = 0


@dataclasses.dataclass
class Findings:
    """What the checks found, as they go (core fills it in; the reports and logs read it)."""

    config: DataChecksConfig
    violations: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    scans: dict[str, Any] = dataclasses.field(default_factory=dict)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    nearest_distance: np.ndarray | None = None
    pairs: list[tuple[int, int, int, str]] = dataclasses.field(default_factory=list)
    empty_images: int = 0
    imbalance: float = 1.0
    champion: str = ""
    champion_classes: tuple[str, ...] = ()
    champion_class_shares: dict[str, float] = dataclasses.field(default_factory=dict)
    class_shift: float = 0.0
    champion_channels: Any = None
    champion_test_duplicates: int = 0
    drift: tuple[float, float, int, int] | None = None  # (mmd^2, p, n champion, n new)
    drift_samples: tuple[np.ndarray, np.ndarray] | None = None

    def result(self) -> DataChecksResult:
        """The step's result."""
        mmd, p_value = (self.drift[0], self.drift[1]) if self.drift else (0.0, 1.0)
        return DataChecksResult(
            mode=self.config.mode, violations=tuple(self.violations), notes=tuple(self.notes),
            exact_duplicates=self.exact_duplicates, near_duplicates=self.near_duplicates,
            champion_test_duplicates=self.champion_test_duplicates,
            empty_images=self.empty_images, drift_checked=self.drift is not None,
            drift_mmd=float(mmd), drift_p_value=float(p_value),
            drifted=self.drift is not None and p_value < self.config.drift_alpha)


def report_blocks(findings: Findings, result: DataChecksResult) -> list[tuple]:
    """The report as blocks, for both renderings.

    A block is ``("h1"|"h2"|"p", text)``, ``("ul", items)`` or ``("table", header, rows)``.
    """
    config = findings.config
    title = "Data checks" + (f" of {config.run_label}" if config.run_label else "")
    link = tensorboard_run_url(config.tensorboard_url, config.run_label)
    verdict = {"off": "Data checks are off.",
               "warn": "Violations are logged (--data-checks warn).",
               "strict": "Any violation fails the run (--data-checks strict)."}[result.mode]
    blocks: list[tuple] = [("h1", title), ("p", f"{result.line()}. {verdict}"),
                           ("p", f"TensorBoard: {link}")]
    blocks += [("h2", "Violations"), ("ul", list(result.violations) or ["none"])]
    if result.notes:
        blocks += [("h2", "Notes"), ("ul", list(result.notes))]
    if not findings.scans:
        return blocks
    scans = findings.scans
    blocks += [("h2", "Splits"), ("table", ["split", "examples", "image shape", "empty images",
                                           "channel means", "channel stds"],
                                  [[name, s.info.num_examples, "x".join(map(str,
                                                                            s.info.image_shape)),
                                    s.empty, _numbers(s.channels.mean()),
                                    _numbers(s.channels.std())] for name, s in scans.items()])]
    train = scans["train"].info
    total = max(sum(train.class_counts), 1)
    header = ["class", "train examples", "share"]
    if findings.champion_class_shares:
        header.append("champion's share")
    rows = []
    for name, count in zip(train.class_names, train.class_counts, strict=True):
        row = [name, count, f"{count / total:.3f}"]
        if findings.champion_class_shares:
            row.append(f"{findings.champion_class_shares.get(name, 0.0):.3f}")
        rows.append(row)
    blocks += [("h2", "Class balance"),
               ("p", f"Largest to smallest class: {findings.imbalance:.2f}:1 (limit "
                     f"{config.max_imbalance:g}:1)"
                     + (f"; total variation from the champion's training data "
                        f"{findings.class_shift:.3f}" if findings.champion_class_shares
                        else "")),
               ("table", header, rows)]
    blocks += [("h2", "Copies between the train and test splits"),
               ("p", f"{result.exact_duplicates} exact and {result.near_duplicates} near "
                     f"copies (near: perceptual hashes within {config.near_distance} of 64 "
                     "bits)."
                     + (f" Showing {len(findings.pairs)}." if findings.pairs else ""))]
    if findings.pairs:
        blocks.append(("table", ["test example", "training example", "bits apart", "kind"],
                       [list(pair) for pair in findings.pairs]))
    if findings.champion:
        blocks += [("h2", "Against the champion"),
                   ("p", f"Champion: {findings.champion}; "
                         f"{result.champion_test_duplicates} training images copy its test "
                         "images.")]
        if findings.champion_channels is not None:
            blocks.append(("table", ["data", "channel means", "channel stds"],
                           [["champion's training data",
                             _numbers(findings.champion_channels.mean()),
                             _numbers(findings.champion_channels.std())],
                            ["new training data", _numbers(scans["train"].channels.mean()),
                             _numbers(scans["train"].channels.std())]]))
        if findings.drift is not None:
            mmd, p_value, n_old, n_new = findings.drift
            blocks.append(("p", f"Drift (MMD on the champion's penultimate-layer embeddings, "
                                f"{n_old} champion and {n_new} new images, "
                                f"{config.drift_permutations} permutations): MMD^2 {mmd:.4g}, "
                                f"p-value {p_value:.4g} "
                                f"({'significant' if result.drifted else 'not significant'} "
                                f"at {config.drift_alpha:g})."))
    return blocks


def _numbers(values: np.ndarray) -> str:
    return ", ".join(f"{v:.4f}" for v in np.asarray(values).ravel())


def render_markdown(findings: Findings, result: DataChecksResult) -> str:
    """The Markdown report."""
    lines: list[str] = []
    for block in report_blocks(findings, result):
        kind = block[0]
        if kind in ("h1", "h2"):
            lines += [("# " if kind == "h1" else "## ") + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "ul":
            lines += [f"- {item}" for item in block[1]] + [""]
        else:
            lines += [markdown_table(block[1], [[_cell(v) for v in row] for row in block[2]]),
                      ""]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def render_html(findings: Findings, result: DataChecksResult) -> str:
    """The HTML report (one self-contained page)."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
             f"<title>{esc(report_blocks(findings, result)[0][1])}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"]
    for block in report_blocks(findings, result):
        kind = block[0]
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{esc(str(block[1]))}</{kind}>")
        elif kind == "ul":
            parts.append("<ul>" + "".join(f"<li>{esc(str(i))}</li>" for i in block[1])
                         + "</ul>")
        else:
            head = "".join(f"<th>{esc(str(h))}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>"
                           for row in block[2])
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def log_findings(writer, findings: Findings, result: DataChecksResult) -> None:  # noqa: ANN001
    """Write the findings to TensorBoard (the tags in the module's docstring)."""
    writer.add_scalar("data/violations", float(len(result.violations)), DATA_STEP)
    writer.add_text("data/violations", "\n".join(f"- {v}" for v in result.violations)
                    or "none", DATA_STEP)
    writer.add_text("data/report", render_markdown(findings, result), DATA_STEP)
    if not findings.scans:
        return
    scalars = {"data/exact_duplicates": result.exact_duplicates,
               "data/near_duplicates": result.near_duplicates,
               "data/champion_test_duplicates": result.champion_test_duplicates,
               "data/empty_images": result.empty_images,
               "data/class_imbalance": findings.imbalance}
    if findings.champion_class_shares:
        scalars["data/class_shift"] = findings.class_shift
    if result.drift_checked:
        scalars.update({"data/drift_mmd": result.drift_mmd,
                        "data/drift_p_value": result.drift_p_value})
    for tag, value in scalars.items():
        writer.add_scalar(tag, float(value), DATA_STEP)
    for name, scan in findings.scans.items():
        if len(scan.labels):
            writer.add_histogram(f"data/labels/{name}", scan.labels, DATA_STEP,
                                 bins=np.arange(scan.info.num_classes + 1) - 0.5)
    if findings.nearest_distance is not None and len(findings.nearest_distance):
        writer.add_histogram("data/nearest_train_distance", findings.nearest_distance,
                             DATA_STEP, bins=np.arange(66) - 0.5)
    if findings.drift_samples is not None:
        for side, images in zip(("champion", "new"), findings.drift_samples, strict=True):
            for k in range(images.shape[-1]):
                writer.add_histogram(f"data/pixels/{side}/channel_{k}",
                                     images[..., k].ravel() / 255.0, DATA_STEP)
