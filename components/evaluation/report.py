"""How an evaluation is shown: TensorBoard summaries and a Markdown report."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tbpipe.components.common.naming import tensorboard_run_url
from tbpipe.components.common.tensorboard.writer import heatmap, markdown_table
from tbpipe.components.evaluation.config import EvaluateConfig, EvaluateResult
from tbpipe.components.evaluation.metrics import PR_THRESHOLDS, ClassScores, pr_curve

EVAL_STEP = 0


def log_evaluation(writer, result: EvaluateResult, pr_histograms: np.ndarray) -> None:
    """Write an evaluation to TensorBoard (``pr_histograms`` from ``core.pr_histograms``).

    Tags: ``eval/loss``, ``eval/accuracy``, ``eval/macro_{precision,recall,f1}``,
    ``eval/{precision,recall,f1}/<k>`` scalars; ``eval/confusion_matrix`` as an image (rows
    normalized per true class) and as a text table; ``eval/per_class`` text; ``pr/<k>`` curves.
    """
    scalars = {"eval/loss": result.loss, "eval/accuracy": result.accuracy,
               "eval/macro_precision": result.macro_precision,
               "eval/macro_recall": result.macro_recall, "eval/macro_f1": result.macro_f1}
    for scores in result.per_class:
        for name in ("precision", "recall", "f1"):
            scalars[f"eval/{name}/{scores.label}"] = getattr(scores, name)
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, EVAL_STEP)
    confusion = np.asarray(result.confusion_matrix, dtype=np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1.0)
    writer.add_image("eval/confusion_matrix", heatmap(rows), EVAL_STEP, dataformats="CHW")
    writer.add_text("eval/confusion_matrix", confusion_table(result.confusion_matrix), EVAL_STEP)
    writer.add_text("eval/per_class", per_class_table(result.per_class), EVAL_STEP)
    for k, hist in enumerate(pr_histograms):
        tp, fp, tn, fn, precision, recall = pr_curve(hist)
        writer.add_pr_curve_raw(f"pr/{k}", tp, fp, tn, fn, precision, recall, EVAL_STEP,
                                num_thresholds=PR_THRESHOLDS)


def confusion_table(matrix: list[list[int]]) -> str:
    """Render the confusion matrix as a Markdown table (rows: true class, columns: predicted)."""
    header = ["true \\ predicted", *(str(k) for k in range(len(matrix)))]
    return markdown_table(header, [[str(k), *row] for k, row in enumerate(matrix)])


def per_class_table(per_class: tuple[ClassScores, ...]) -> str:
    """Render precision, recall, F1 and support per class as a Markdown table."""
    rows = [[s.label, f"{s.precision:.4f}", f"{s.recall:.4f}", f"{s.f1:.4f}", s.support]
            for s in per_class]
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
        "## Per class", "", per_class_table(result.per_class), "",
        "## Confusion matrix", "", confusion_table(result.confusion_matrix), "",
    ]
    return "\n".join(lines)
