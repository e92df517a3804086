"""How an evaluation is shown: TensorBoard summaries and a Markdown report."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.components.common.tensorboard.writer import heatmap, markdown_table
from tbpipe.components.evaluation.config import EvaluateConfig, EvaluateResult
from tbpipe.components.evaluation.metrics import PR_THRESHOLDS, ClassScores, pr_curve

EVAL_STEP = 0


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
    upwards); without PIL, the plain heatmap.
    """
    image = heatmap(matrix, cell)
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
