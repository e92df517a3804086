"""How an evaluation is shown: TensorBoard summaries, a Markdown and an HTML report."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence

import numpy as np

from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.components.common.tensorboard.writer import heatmap, heatmap_cell, markdown_table
from tbpipe.components.evaluation.config import EvaluateConfig, EvaluateResult
from tbpipe.components.evaluation.metrics import (
    PR_THRESHOLDS,
    ClassScores,
    most_confused,
    pr_curve,
)
from tbpipe.components.evaluation.misclassified import Mistake, labeled_tiles, png_base64

EVAL_STEP = 0
#: The smallest cell (pixels) of the confusion image that still gets its class name drawn.
MIN_LABELED_CELL = 10


def log_evaluation(writer, result: EvaluateResult, pr_histograms: np.ndarray) -> None:
    """Write an evaluation to TensorBoard (``pr_histograms`` from ``core.pr_histograms``).

    Tags: ``eval/loss``, ``eval/accuracy``, ``eval/macro_{precision,recall,f1}``,
    ``eval/{precision,recall,f1}/<name>`` scalars; ``eval/confusion_matrix`` as an image (rows
    normalized per true class, class names on its axes) and as a text table;
    ``eval/per_class`` text; ``pr/<name>`` curves. ``<name>`` is the class name
    (:func:`tag_names`), ``str(k)`` when the data and the model name none.
    """
    tags = tag_names(result.names)
    scalars = {"eval/loss": result.loss, "eval/accuracy": result.accuracy,
               "eval/macro_precision": result.macro_precision,
               "eval/macro_recall": result.macro_recall, "eval/macro_f1": result.macro_f1}
    for scores in result.per_class:
        for name in ("precision", "recall", "f1"):
            scalars[f"eval/{name}/{tags[scores.label]}"] = getattr(scores, name)
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, EVAL_STEP)
    confusion = np.asarray(result.confusion_matrix, dtype=np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1.0)
    writer.add_image("eval/confusion_matrix", labeled_heatmap(rows, result.names), EVAL_STEP,
                     dataformats="CHW")
    writer.add_text("eval/confusion_matrix",
                    confusion_table(result.confusion_matrix, result.names), EVAL_STEP)
    writer.add_text("eval/per_class", per_class_table(result.per_class, result.names),
                    EVAL_STEP)
    for k, hist in enumerate(pr_histograms):
        tp, fp, tn, fn, precision, recall = pr_curve(hist)
        writer.add_pr_curve_raw(f"pr/{tags[k]}", tp, fp, tn, fn, precision, recall, EVAL_STEP,
                                num_thresholds=PR_THRESHOLDS)


def tag_names(names: Sequence[str]) -> list[str]:
    """Class names as tag segments, one per class.

    Characters other than letters, digits, ``-`` and ``.`` become ``_`` (no ``/`` nesting);
    a name that is empty or repeats gets its index appended.
    """
    out: list[str] = []
    for k, name in enumerate(names):
        tag = re.sub(r"[^\w.-]", "_", str(name)) or str(k)
        out.append(f"{tag}_{k}" if tag in out else tag)
    return out


def labeled_heatmap(matrix: np.ndarray, names: Sequence[str], cell: int = 20) -> np.ndarray:
    """:func:`heatmap` of ``matrix`` with the class names on its axes (CHW, values in [0, 1]).

    Names are drawn left of the rows (true class) and above the columns (predicted, written
    upwards); without PIL, or where so many classes shrink a cell below ``MIN_LABELED_CELL``
    pixels (``HEATMAP_MAX_SIDE``: one name could not be told from the next), the plain
    heatmap.
    """
    image = heatmap(matrix, cell)
    cell = heatmap_cell(len(matrix), cell)
    if cell < MIN_LABELED_CELL:
        return image
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return image
    font = ImageFont.load_default()
    labels = [str(n)[:24] for n in names]
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    margin = 6 + max(int(measure.textlength(t, font=font)) for t in labels)
    side = image.shape[1]
    canvas = Image.new("RGB", (margin + side, margin + side), "white")
    canvas.paste(Image.fromarray(np.rint(image.transpose(1, 2, 0) * 255).astype(np.uint8)),
                 (margin, margin))
    draw = ImageDraw.Draw(canvas)
    for k, text in enumerate(labels):
        centre = margin + k * cell + cell // 2
        width = int(draw.textlength(text, font=font))
        draw.text((margin - 3 - width, centre), text, fill="black", font=font, anchor="lm")
        strip = Image.new("L", (width + 2, cell), 255)
        ImageDraw.Draw(strip).text((1, cell // 2), text, fill=0, font=font, anchor="lm")
        rotated = strip.rotate(90, expand=True)
        canvas.paste(Image.merge("RGB", [rotated] * 3), (centre - cell // 2,
                                                         margin - 3 - rotated.height))
    return (np.asarray(canvas, dtype=np.float32) / 255.0).transpose(2, 0, 1)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def confusion_table(matrix: list[list[int]], names: Sequence[str] | None = None) -> str:
    """Render the confusion matrix as a Markdown table (rows: true class, columns: predicted)."""
    names = [_cell(n) for n in (names or [str(k) for k in range(len(matrix))])]
    header = ["true \\ predicted", *names]
    return markdown_table(header, [[names[k], *row] for k, row in enumerate(matrix)])


def per_class_table(per_class: tuple[ClassScores, ...],
                    names: Sequence[str] | None = None) -> str:
    """Render precision, recall, F1 and support per class as a Markdown table."""
    rows = [[_cell(names[s.label]) if names else s.label, f"{s.precision:.4f}",
             f"{s.recall:.4f}", f"{s.f1:.4f}", s.support] for s in per_class]
    return markdown_table(["class", "precision", "recall", "f1", "support"], rows)


def render_report(result: EvaluateResult, model_uri: str, test_uri: str,
                  model_info: Mapping[str, object], config: EvaluateConfig) -> str:
    """Render the Markdown report of one evaluation.

    Args:
        result: What the evaluation found.
        model_uri: Where the model came from.
        test_uri: Where the test Dataset came from.
        model_info: The model folder's ``model.json`` (shape, classes, epochs, source).
        config: The step's settings (TensorBoard address, run label).

    """
    verdict = "meets" if result.meets_target else "misses"
    link = tensorboard_run_url(config.tensorboard_url, config.run_label)
    details = ", ".join(f"{k}: {model_info[k]}" for k in ("image_shape", "num_classes",
                                                          "epochs", "source") if k in model_info)
    lines = [
        f"# Evaluation{f' of {config.run_label}' if config.run_label else ''}", "",
        f"- Model: `{model_uri}`" + (f" ({details})" if details else ""),
        f"- Test data: `{test_uri}` ({result.num_examples} examples)",
        f"- Loss: {result.loss:.4f}",
        f"- Accuracy: {result.accuracy:.4f} — {verdict} the target of "
        f"{result.accuracy_target:.4f}",
        f"- Macro precision / recall / F1: {result.macro_precision:.4f} / "
        f"{result.macro_recall:.4f} / {result.macro_f1:.4f}",
        f"- TensorBoard: [{link}]({link})", "",
        "## Per class", "", per_class_table(result.per_class, result.names), "",
        "## Confusion matrix", "", confusion_table(result.confusion_matrix, result.names), "",
    ]
    return "\n".join(lines)


def log_mistakes(writer, mistakes: Sequence[Mistake], total: int,
                 names: Sequence[str]) -> None:
    """Log the kept misclassified examples: ``eval/misclassified`` image grid and text.

    The grid (tensorboardX ``add_images``) holds one tile per kept mistake, the surest
    first, each labelled ``true>predicted``; the text table lists them with the model's
    confidence and says how many of the ``total`` mistakes it shows. Nothing without mistakes.
    """
    if not mistakes:
        return
    writer.add_images("eval/misclassified", labeled_tiles(mistakes, names), EVAL_STEP,
                      dataformats="NHWC")
    rows = [[m.index, _cell(names[m.true]), _cell(names[m.predicted]), f"{m.confidence:.4f}"]
            for m in mistakes]
    writer.add_text("eval/misclassified",
                    f"{len(mistakes)} of {total} misclassified test examples, the model's "
                    "surest first\n\n"
                    + markdown_table(["example", "true", "predicted", "confidence"], rows),
                    EVAL_STEP)


_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px}
td.n{text-align:right}figure{display:inline-block;margin:4px;text-align:center;width:110px}
figure img{width:96px;height:auto;image-rendering:pixelated;border:1px solid #999}
figcaption{font-size:11px;overflow-wrap:anywhere}.wrong{color:#b00}"""


def render_html_report(result: EvaluateResult, mistakes: Sequence[Mistake], total_mistakes: int,
                       model_uri: str, test_uri: str, model_info: Mapping[str, object],
                       config: EvaluateConfig, confused_pairs: int = 10) -> str:
    """Render the HTML report of one evaluation: one self-contained page.

    The scores, per-class precision/recall/F1 and support, the ``confused_pairs`` most
    confused (true, predicted) pairs, and the thumbnails of ``mistakes`` with their true and
    predicted classes, embedded as base64 PNG. Every name and path is HTML-escaped.

    Args:
        result: What the evaluation found.
        mistakes: The misclassified examples to show (:class:`~.misclassified.MistakeSample`).
        total_mistakes: How many test examples were misclassified in all.
        model_uri: Where the model came from.
        test_uri: Where the test Dataset came from.
        model_info: The model folder's ``model.json``.
        config: The step's settings (TensorBoard address, run label).
        confused_pairs: How many confused pairs to list.

    """
    esc = html.escape
    names = result.names
    link = tensorboard_run_url(config.tensorboard_url, config.run_label)
    verdict = "meets" if result.meets_target else "misses"
    title = f"Evaluation{f' of {config.run_label}' if config.run_label else ''}"
    details = ", ".join(f"{k}: {model_info[k]}" for k in ("image_shape", "num_classes",
                                                          "epochs", "source") if k in model_info)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1><ul>",
        f"<li>Model: <code>{esc(model_uri)}</code>{f' ({esc(details)})' if details else ''}</li>",
        f"<li>Test data: <code>{esc(test_uri)}</code> ({result.num_examples} examples)</li>",
        f"<li>Loss: {result.loss:.4f}</li>",
        f"<li>Accuracy: {result.accuracy:.4f} &mdash; {verdict} the target of "
        f"{result.accuracy_target:.4f}</li>",
        f"<li>Macro precision / recall / F1: {result.macro_precision:.4f} / "
        f"{result.macro_recall:.4f} / {result.macro_f1:.4f}</li>",
        f'<li>TensorBoard: <a href="{esc(link)}">{esc(link)}</a></li></ul>',
        "<h2>Per class</h2>",
        _html_table(["class", "precision", "recall", "F1", "support"],
                    [[names[s.label], s.precision, s.recall, s.f1, s.support]
                     for s in result.per_class]),
        "<h2>Most confused classes</h2>",
    ]
    pairs = most_confused(np.asarray(result.confusion_matrix), confused_pairs)
    support = {s.label: s.support for s in result.per_class}
    parts.append(_html_table(
        ["true", "predicted as", "examples", "share of the true class"],
        [[names[t], names[p], n, f"{n / max(support[t], 1):.1%}"] for t, p, n in pairs])
        if pairs else "<p>No test example was misclassified.</p>")
    parts.append("<h2>Misclassified test images</h2>")
    if mistakes:
        parts.append(f"<p>{len(mistakes)} of {total_mistakes} misclassified examples, the "
                     "ones the model was surest of first.</p><div>")
        for m in mistakes:
            alt = f"example {m.index}: {names[m.true]} predicted as {names[m.predicted]}"
            parts.append(
                f'<figure><img src="data:image/png;base64,{png_base64(m.thumbnail)}" '
                f'alt="{esc(alt)}"><figcaption>#{m.index}<br>true: {esc(names[m.true])}'
                f'<br><span class="wrong">predicted: {esc(names[m.predicted])}</span>'
                f"<br>p={m.confidence:.3f}</figcaption></figure>")
        parts.append("</div>")
    else:
        parts.append("<p>None.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; text cells escaped, numbers right-aligned (floats to 4 places)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _html_cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="n">{value:.4f}</td>'
    if isinstance(value, int):
        return f'<td class="n">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"
