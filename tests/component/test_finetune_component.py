"""The train and finetune wrappers pass ``precision`` through to the models they write."""

import json

from kfp.dsl import Dataset, Metrics, Model

from tbpipe.components import finetune, train
from tests.helpers import write_dataset

WHERE = dict(experiment="exp", run_name="r1", job_name="job")


def test_train_and_finetune_components_take_a_precision(tmp_path):
    write_dataset(str(tmp_path / "train"), n=32, seed=0)
    write_dataset(str(tmp_path / "val"), n=16, seed=1)
    data = Dataset(uri=str(tmp_path / "train")), Dataset(uri=str(tmp_path / "val"))
    model = Model(uri=str(tmp_path / "model"))
    train.python_func(train_data=data[0], val_data=data[1], model=model,
                      metrics=Metrics(uri=str(tmp_path / "m1")), log_root=str(tmp_path / "logs"),
                      epochs=1, batch_size=16, precision="mixed_bfloat16", **WHERE)
    tuned = Model(uri=str(tmp_path / "tuned"))
    finetune.python_func(model=model, train_data=data[0], val_data=data[1],
                         finetuned_model=tuned, metrics=Metrics(uri=str(tmp_path / "m2")),
                         log_root=str(tmp_path / "logs"), epochs=1, batch_size=16,
                         precision="float32", **WHERE)
    trained_meta = json.loads((tmp_path / "model" / "model.json").read_text())
    tuned_meta = json.loads((tmp_path / "tuned" / "model.json").read_text())
    assert (trained_meta["precision"], tuned_meta["precision"]) == ("mixed_bfloat16", "float32")
