"""az:// end to end on Azurite, a store tbpipe has no code for: the pipeline, then TensorBoard.

Data, log root, checkpoints and the production folder are all on Azure Blob (adlfs, through
fsspec); ``tbpipe tensorboard`` serves the log root through TensorBoard's fsspec reader.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tbpipe.components.common import storage
from tests.helpers import TBPIPE, served_tensorboard
from tests.integration.test_s3 import scalar_points, wait_for_series

pytestmark = [pytest.mark.integration, pytest.mark.azure]


@pytest.mark.slow
def test_pipeline_on_azure_blob_and_tensorboard_serves_every_step(az_root, tmp_path):
    """``--data az://.../data.csv --log-root az://.../tb``, then ``tbpipe tensorboard`` on it."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    from tbpipe.pipelines.runners.local import run_pipeline
    from tbpipe.pipelines.training import PipelineParams

    digits = load_digits()
    table = pd.DataFrame(np.clip(digits.data[:300] * 16, 0, 255).astype(int),
                         columns=[f"pixel{i}" for i in range(64)])
    table.insert(0, "label", digits.target[:300])
    table.to_csv(tmp_path / "data.csv", index=False)
    data_uri = storage.join(az_root, "data.csv")
    storage.upload_file(str(tmp_path / "data.csv"), data_uri)
    log_root = storage.join(az_root, "tb")
    production = storage.join(az_root, "prod", "digits")
    params = PipelineParams(data=data_uri, log_root=log_root, experiment="az", run_name="r1",
                            epochs=1, finetune="never", promote_to=production)
    result = run_pipeline(params, pipeline_root=str(tmp_path / "kfp"))
    assert result.log_dir == storage.join(log_root, "az", "r1")
    assert storage.exists(storage.join(log_root, "az", "r1", "_run.json"))  # the run claim
    saved = storage.list_files(storage.join(f"{log_root}-checkpoints", "az", "r1",
                                            "checkpoints"))
    assert {name.split("/")[0] for name in saved} == {"train"}, saved
    steps = ("preprocess", "train", "evaluate")
    for step in steps:
        events = [name for name in storage.list_files(storage.join(result.log_dir, step))
                  if "tfevents" in name]  # a finished step: its segments compacted into one
        assert len(events) == 1 and events[0].endswith(".compacted"), (step, events)
    record = json.loads(storage.read_bytes(storage.join(production, "promotion.json")))
    assert record["current"]["run"] == "az/r1", record  # no baseline: the first model goes in
    assert "v1/model.keras" in storage.list_files(production)  # the registry's first version
    listing = subprocess.run([*TBPIPE, "runs", "--log-root", log_root, "--output", "json"],
                             capture_output=True, text=True, timeout=120)
    assert listing.returncode == 0, listing.stderr
    run, = json.loads(listing.stdout)["runs"]  # `tbpipe runs` reads the summary from az://
    assert (run["experiment"], run["run"]) == ("az", "r1"), run
    assert run["test_accuracy"] == pytest.approx(result.summary["accuracy"]["trained"], abs=1e-4)
    assert run["promotion"]["promoted"], run

    with served_tensorboard(log_root, str(tmp_path / "tb.log")) as (_, base, printed):
        address, loader = printed
        assert base in address and log_root in address, address
        assert loader.startswith("loader: mirror") and "az://" in loader, loader
        tags = wait_for_series(base, "az/r1", {"train": ("epoch/loss", 1),
                                               "evaluate": ("eval/accuracy", 1)}, also=steps)
        assert tags.get("az/r1/preprocess"), (sorted(tags), (tmp_path / "tb.log").read_text())
        assert len(scalar_points(base, "az/r1/train", "epoch/loss")) == 1, sorted(tags)
        assert len(scalar_points(base, "az/r1/evaluate", "eval/accuracy")) == 1, tags
