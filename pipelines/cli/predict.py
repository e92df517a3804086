"""``tbpipe predict``: the top classes of images under a Model folder (needs TensorFlow)."""

from __future__ import annotations

import argparse
import sys

OUTPUTS = ("text", "json", "csv")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``predict``."""
    cmd = subparsers.add_parser(
        "predict", help="print the top classes of image files under a model",
        description="Classify images with a tbpipe Model folder (its saved_model/ if it "
                    "has one) or a registry (--promote-to: its champion): "
                    "one line per file, 'FILE: class prob, ...' (--output json: a JSON object "
                    "per line; csv: a table); a file that cannot be read is one error line, "
                    "the others are still classified, and the exit status is 1 at the end.")
    cmd.add_argument("--model", required=True, metavar="URI",
                     help="a Model folder or a registry (local or a store URI: gs://, s3://, "
                          "az://...), e.g. the best_model output")
    cmd.add_argument("--top", type=int, default=3, metavar="N",
                     help="how many classes per file (default: 3)")
    cmd.add_argument("--output", choices=OUTPUTS, default="text",
                     help="text lines (default), JSON lines or CSV, on stdout")
    cmd.add_argument("--batch-size", type=int, default=256, metavar="N",
                     help="images read and predicted at once with --output json|csv "
                          "(default: 256)")
    cmd.add_argument("files", nargs="+", metavar="IMAGES",
                     help="image files (PNG, JPEG, ...), folders of images, CSV/Parquet lists "
                          "(a 'path' column) or store URIs (gs://, s3://, ...) of any of these")
    cmd.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    """Print the predictions; 1 if any file could not be read."""
    import os

    from tbpipe.components.prediction.core import iter_image_uris, serving_model
    from tbpipe.pipelines.runners.local import tensorflow_log_level

    tensorflow_log_level(os.environ)  # before TensorFlow loads: no CUDA noise among the lines
    model = serving_model(args.model)
    files = (uri for source in args.files for uri in iter_image_uris(source))

    def to_stderr(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.output == "text":
        from tbpipe.components.common.serving import predict_files

        failed = predict_files(model, files, top=args.top,
                               emit=lambda line: print(line, flush=True), emit_error=to_stderr)
    else:
        failed = _print_table(model, files, args, to_stderr)
    return 1 if failed else 0


def _print_table(model: str, files, args: argparse.Namespace, to_stderr) -> int:  # noqa: ANN001
    """--output json|csv through batch prediction's own streaming; how many failed."""
    import csv
    import json

    from tbpipe.components.common.serving import load_predictor
    from tbpipe.components.prediction.config import BatchPredictConfig
    from tbpipe.components.prediction.core import flat_row, iter_predictions, table_columns

    config = BatchPredictConfig(top_k=args.top, batch_size=args.batch_size)
    predictor = load_predictor(model)
    top = min(config.top_k, len(predictor.class_names))
    table = csv.writer(sys.stdout) if args.output == "csv" else None
    if table:
        table.writerow(table_columns(top))
    failed = 0
    for rows in iter_predictions(predictor, files, config):
        for row in rows:
            if row["error"]:
                failed += 1
                to_stderr(f"error: {row['error']}")
            if table:
                table.writerow(flat_row(row, top))
            else:
                print(json.dumps(row), flush=False)
        sys.stdout.flush()
    return failed
