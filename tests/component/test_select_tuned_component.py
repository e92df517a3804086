"""The suggest and select-tuned components called as KFP would: the search's outputs.

A search of three trials (one pruned, one failed) recorded in the study the suggest
component made; select-tuned's ``best_params`` (KFP Metrics), ``table`` (Markdown),
``best_model`` and returned values are what ``tbpipe run`` and the KFP UI show.
"""

import json

from kfp.dsl import Markdown, Metrics, Model

from tbpipe.components import select_tuned, suggest
from tbpipe.components.selection.config import TuneConfig
from tbpipe.components.tuning.study import read_trial, write_trial
from tests.unit.test_tune_pipe import model_folder

WHERE = dict(experiment="exp", run_name="r1", job_name="job-5")


def test_select_tuned_outputs_the_best_params_and_the_trial_table(tmp_path):
    logs = str(tmp_path / "logs")
    tune = TuneConfig(("learning_rate=1e-4..1e-1:log", "batch_size=32..256:int",
                       "model.width=4|8"), algorithm="random", trials=3, parallel=3,
                      max_failed=1).to_json()
    trials = suggest.python_func(tune=tune, count=3, log_root=logs, seed=7, **WHERE)
    assert [t["trial"] for t in trials] == ["trial-01", "trial-02", "trial-03"]
    study = trials[0]["tune_study"]
    outcomes = {0: ("complete", 0.8, 3), 1: ("pruned", 0.3, 2), 2: ("failed", None, 1)}
    for number, (state, accuracy, epochs) in outcomes.items():
        record = read_trial(study, number)
        write_trial(study, record.replace(
            state=state, epochs_run=epochs,
            values={"val_accuracy": accuracy} if accuracy is not None else {},
            error="ValueError: width | too wide" if state == "failed" else "",
            model_uri="" if state == "failed" else model_folder(tmp_path / f"m{number}",
                                                                   f"model {number}")))
    best = read_trial(study, 0)

    best_model = Model(uri=str(tmp_path / "best"))
    table, best_params = Markdown(uri=str(tmp_path / "table.md")), Metrics(
        uri=str(tmp_path / "best_params"))
    returned = select_tuned.python_func(
        tune=tune, log_root=logs, best_model=best_model, table=table, best_params=best_params,
        batch_size=32, seed=42, precision="auto", **WHERE)

    # best_params: the best trial's numeric parameters and objective values, and which it is
    meta = best_params.metadata
    assert meta["trial"] == "trial-01"
    assert json.loads(meta["params"]) == dict(best.params)
    assert meta["learning_rate"] == best.params["learning_rate"]
    assert meta["batch_size"] == best.params["batch_size"]
    assert meta["model.width"] == best.params["model.width"]
    assert meta["val_accuracy"] == 0.8
    assert set(meta) == {"trial", "params", "learning_rate", "batch_size", "model.width",
                         "val_accuracy"}
    # table: one Markdown row per trial, its state, epochs, value, parameters and error
    lines = open(table.path, encoding="utf-8").read().splitlines()
    assert lines[0] == ("| trial | state | epochs_run | val_accuracy | batch_size | "
                        "learning_rate | model.width | pareto | best | error |")
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
    assert [row[:4] for row in rows] == [["trial-01", "complete", "3", "0.8"],
                                         ["trial-02", "pruned", "2", "0.3"],
                                         ["trial-03", "failed", "1", ""]]
    assert rows[0][7:9] == ["yes", "yes"] and rows[1][7:9] == ["", ""]
    assert rows[2][-1] == "ValueError: width \\| too wide"  # the pipe escaped
    assert rows[0][4:7] == [str(best.params["batch_size"]),
                            f"{best.params['learning_rate']:.4g}", str(best.params["model.width"])]
    # the best model and what finetune trains with
    assert open(f"{best_model.path}/model.keras").read() == "model 0"
    assert best_model.metadata == {"source": "trained", "trial": "trial-01"}
    assert returned.batch_size == best.params["batch_size"]
    assert (returned.seed, returned.precision) == (42, "auto")
    outcome = json.loads(returned.trials)
    assert outcome["best_trial"] == "trial-01" and outcome["best_params"] == dict(best.params)
