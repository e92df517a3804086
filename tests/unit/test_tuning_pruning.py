"""Pruning from a trial's own event files: a clearly worse curve is stopped, a good one is not.

The first tests write real event files with tensorboardX (no TensorFlow); the last trains a
user's model with keyword hyper-parameters through the train step's hook.
"""

import json
import textwrap

import pytest
from tensorboardX import SummaryWriter

from tbpipe.components.common.errors import SettingError
from tbpipe.components.common.tensorboard.writer import sync_events
from tbpipe.components.tuning.objectives import parse_objectives
from tbpipe.components.tuning.pruning import EventCurve, TrialReporter, read_curve
from tbpipe.components.tuning.space import SearchSpace, trial_settings
from tbpipe.components.tuning.study import read_trial, read_trials, suggest_trials, write_trial

GOOD = {1: 0.55, 2: 0.70, 3: 0.80, 4: 0.85}
STEPS_PER_EPOCH = 7


def finished_study(uri, space, others=4, new=2, objectives=()):
    """``others`` complete trials with the GOOD curve, then ``new`` running ones."""
    objectives = parse_objectives(objectives)
    for record in suggest_trials(uri, space, "random", others, 0, objectives):
        write_trial(uri, record.replace(state="complete", intermediate=GOOD, epochs_run=4,
                                        values={"val_accuracy": GOOD[4], "latency": 1e-3}))
    return suggest_trials(uri, space, "random", new, 0, objectives)


def log_epoch(writer, epoch, value):
    """What tbpipe's callback logs at an epoch's end (at its last global batch), synced."""
    writer.add_scalar("epoch/val_accuracy", value, epoch * STEPS_PER_EPOCH)
    writer.add_scalar("epoch/accuracy", value + 0.1, epoch * STEPS_PER_EPOCH)
    assert sync_events(writer)


def test_the_median_pruner_stops_a_clearly_worse_curve_only(tmp_path):
    uri = str(tmp_path / "study")
    bad, good = finished_study(uri, SearchSpace.parse(["learning_rate=1e-3..1e-1:log"]))
    decisions = {}
    for record, curve in ((bad, {1: 0.30, 2: 0.35, 3: 0.40}), (good, {1: 0.60, 2: 0.75,
                                                                        3: 0.82})):
        log_dir = tmp_path / f"trial-{record.number}"
        reporter = TrialReporter(uri, record.number, "median", max_epochs=4,
                                 log_dir=str(log_dir))
        reporter.watch(str(log_dir))
        writer = SummaryWriter(str(log_dir))
        decisions[record.number] = []
        for epoch, value in curve.items():
            log_epoch(writer, epoch, value)
            decisions[record.number].append(reporter.epoch_end())
            if reporter.pruned:
                break
        writer.close()
        reporter.finish({"val_accuracy": curve[len(decisions[record.number])]})
    # never before epoch 2 (the warm-up), then the worse curve is below the median
    assert decisions == {bad.number: [False, True], good.number: [False, False, False]}
    records = {r.number: r for r in read_trials(uri)}
    assert records[bad.number].state == "pruned" and records[bad.number].epochs_run == 2
    assert records[bad.number].intermediate == pytest.approx({1: 0.30, 2: 0.35})
    assert records[good.number].state == "complete" and records[good.number].epochs_run == 3
    assert records[bad.number].log_dir == str(tmp_path / f"trial-{bad.number}")


def test_hyperband_prunes_from_the_rungs_other_trials_left_in_their_records(tmp_path):
    """Each trial reports from a reporter of its own (as separate steps do): Hyperband's
    rungs reach the later trials only through the records."""
    uri = str(tmp_path / "study")
    records = suggest_trials(uri, SearchSpace.parse(["learning_rate=1e-3..1e-1:log"]),
                             "random", 8, 0, parse_objectives([]))
    decisions = {}
    for record in records:
        reporter = TrialReporter(uri, record.number, "hyperband", max_epochs=4)
        events = str(tmp_path / f"events-{record.number}")
        reporter.watch(events)
        writer = SummaryWriter(events)
        start = 0.05 if record.number == 7 else 0.5 + 0.01 * record.number
        decisions[record.number] = []
        for epoch in range(1, 5):
            log_epoch(writer, epoch, start + 0.05 * epoch)
            decisions[record.number].append(reporter.epoch_end())
            if reporter.pruned:
                break
        writer.close()
        reporter.finish({"val_accuracy": start + 0.05 * len(decisions[record.number])})
    assert decisions[7] == [True]  # far below the first rung of the trials before it
    assert all(decisions[n] == [False] * 4 for n in range(7))
    assert read_trial(uri, 7).system_attrs == {"completed_rung_0": pytest.approx(0.1)}
    assert "completed_rung_1" in read_trial(uri, 1).system_attrs


def test_the_curve_is_read_as_it_grows_and_a_resume_overwrites_its_steps(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    curve = EventCurve(str(tmp_path), "epoch/val_accuracy")
    assert curve.read() == {}
    log_epoch(writer, 1, 0.5)
    assert curve.read() == pytest.approx({1: 0.5})
    log_epoch(writer, 2, 0.6)
    writer.close()
    resumed = SummaryWriter(str(tmp_path), filename_suffix=".resumed")  # a later file
    log_epoch(resumed, 2, 0.65)
    log_epoch(resumed, 3, 0.7)
    resumed.close()
    assert curve.read() == pytest.approx({1: 0.5, 2: 0.65, 3: 0.7})
    assert read_curve(str(tmp_path)) == pytest.approx({1: 0.5, 2: 0.65, 3: 0.7})


def test_a_trial_that_was_never_suggested_is_refused(tmp_path):
    uri = str(tmp_path / "study")
    finished_study(uri, SearchSpace.parse(["learning_rate=1e-3..1e-1:log"]), others=1, new=0)
    with pytest.raises(SettingError, match="tune_trial=7: no such trial"):
        TrialReporter(uri, 7, "median", max_epochs=2)


USER_MODEL = textwrap.dedent('''
    import keras


    def net(input_shape, num_classes, *, width=4, dropout=0.0):
        return keras.Sequential([
            keras.Input(shape=input_shape), keras.layers.Flatten(),
            keras.layers.Dense(width, activation="relu", name=f"hidden_{width}"),
            keras.layers.Dropout(dropout),
            keras.layers.Dense(num_classes, activation="softmax"),
        ])
''')


@pytest.mark.slow
def test_a_trial_fit_is_pruned_from_its_events_with_the_model_kwargs_it_was_given(tmp_path):
    from tbpipe.components.training.config import TrainConfig
    from tbpipe.components.training.core import train_model
    from tests.helpers import write_train_val
    from tests.unit.test_train import read_hparams

    train, val = write_train_val(tmp_path, n_train=32, n_val=16)
    (tmp_path / "net.py").write_text(USER_MODEL)
    uri = str(tmp_path / "study")
    space = SearchSpace.parse(["model.width=3..6:int", "model.dropout=0.0..0.2"])
    (record, _) = finished_study(uri, space, objectives=["val_accuracy", "latency"])
    for done in read_trials(uri)[:4]:  # the others were perfect from the first epoch
        write_trial(uri, done.replace(intermediate={1: 1.0, 2: 1.0, 3: 1.0},
                                      values={"val_accuracy": 1.0}))
    settings = trial_settings(record.params)
    config = TrainConfig(epochs=3, batch_size=16, precision="float32", histogram_every=0,
                         batch_log_every=0, model_spec=f"{tmp_path}/net.py:net",
                         tune_study=uri, tune_trial=record.number, pruner="median", **settings)
    result = train_model(train, val, str(tmp_path / "model"), str(tmp_path / "logs"), config)

    done = read_trial(uri, record.number)
    assert done.state == "pruned" and done.epochs_run == 2 and len(done.intermediate) == 2
    assert done.values["val_accuracy"] == pytest.approx(result.metrics["val_accuracy"])
    assert done.intermediate == pytest.approx(read_curve(str(tmp_path / "logs")))
    width = record.params["model.width"]
    meta = json.loads((tmp_path / "model" / "model.json").read_text())  # the model is kept
    assert meta["model.width"] == width and done.values["params"] == meta["params"]
    assert meta["epochs"] == 2 and result.epochs_run == 2  # what it trained, not 3
    assert 0 < done.values["latency"] < 1  # seconds per example, measured once it ended
    hparams = read_hparams(str(tmp_path / "logs"))
    assert hparams["tune_state"] == "pruned" and hparams["model.width"] == width


def test_past_the_searchs_deadline_a_running_trial_stops_at_its_epochs_end(tmp_path):
    """--tune-timeout bounds the whole search: a trial running then stops, its model kept."""
    import time

    from tbpipe.components.tuning.study import read_deadline, set_deadline

    uri = str(tmp_path / "study")
    late, early = finished_study(uri, SearchSpace.parse(["learning_rate=1e-3..1e-1:log"]))
    assert read_deadline(uri) is None
    on_time = TrialReporter(uri, early.number, "none", max_epochs=4)
    assert on_time.epoch_end() is False  # no deadline: trains on
    set_deadline(uri, time.time() - 1)
    set_deadline(uri, time.time() + 3600)  # a later round's: the first one is kept
    assert read_deadline(uri) < time.time()
    reporter = TrialReporter(uri, late.number, "none", max_epochs=4)
    assert reporter.epoch_end() is True
    done = reporter.finish({"val_accuracy": 0.5})
    assert done.state == "pruned" and done.system_attrs["stopped_by"] == "--tune-timeout"
