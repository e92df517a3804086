"""RunPlace: one value for where a run logs, one default per part, one validation."""

import inspect
import os

import pytest

from tbpipe import components
from tbpipe.components.common.errors import InputError
from tbpipe.components.common.run_claim import RUN_MARKER
from tbpipe.components.common.run_place import DEFAULT_EXPERIMENT, RunPlace, step_run
from tbpipe.pipelines.training import PipelineParams


def test_defaults_are_one_per_part_and_the_pipelines_and_components_use_them():
    place = RunPlace()
    assert (place.log_root, place.experiment, place.run_name, place.resume, place.job_name) \
        == ("", DEFAULT_EXPERIMENT, "", False, "")
    params = PipelineParams()
    for part in ("log_root", "experiment", "run_name", "resume"):
        assert getattr(params, part) == getattr(place, part), part
    # KFP runs a component's own source: its literal defaults must be RunPlace's
    for name in components.__all__:
        inputs = getattr(components, name).component_spec.inputs or {}
        for part in ("experiment", "run_name", "resume"):
            if part in inputs:
                assert inputs[part].default == getattr(place, part), (name, part)


def test_a_components_literal_defaults_are_the_tables_where_the_pipeline_binds_them(tmp_path):
    """KFP runs a component's own source, so its signature writes defaults again: each must be
    the default of the pipeline parameter the compiled pipeline binds to that input (in every
    sub-DAG; ``finetune``'s ``epochs`` is ``finetune_epochs``), and a component used on its own
    gets what the pipeline would give it."""
    import yaml
    from kfp import compiler

    from tbpipe.components.registry import param_table
    from tbpipe.pipelines.training import build_training_pipeline

    package = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_training_pipeline(), str(package))
    spec = next(yaml.safe_load_all(package.read_text()))  # then the platform spec
    table = param_table()
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    checked = set()
    for dag in dags:
        for task in dag["tasks"].values():
            component = spec["components"][task["componentRef"]["name"]]
            declared = component.get("inputDefinitions", {}).get("parameters", {})
            for name, value in task.get("inputs", {}).get("parameters", {}).items():
                bound = value.get("componentInputParameter", "").removeprefix("pipelinechannel--")
                if bound in table and "defaultValue" in declared.get(name, {}):
                    assert declared[name]["defaultValue"] == table[bound].default, (
                        task["componentRef"]["name"], name, bound)
                    checked.add(bound)
    assert {"experiment", "tensorboard_url", "finetune_epochs", "epochs", "data_checks"} <= checked


@pytest.mark.parametrize(("place", "match"), [
    (dict(experiment="../up"), "experiment name '../up' is not allowed"),
    (dict(run_name="a/b"), "run name 'a/b' is not allowed"),
    (dict(experiment=""), "experiment name '' is not allowed"),
])
def test_names_that_cannot_be_folders_are_refused_once_when_built(place, match):
    with pytest.raises(InputError, match=match):
        RunPlace(**place)
    with pytest.raises(InputError, match=match):
        PipelineParams(**place).validate()


def test_a_step_needs_a_log_root_and_logs_under_its_run():
    with pytest.raises(InputError, match="log_root is empty"):
        RunPlace().log_dir("r1", "train")
    place = RunPlace("gs://b/tb", "exp", job_name="job-7")
    assert place.run() == "job-7"
    assert place.log_dir("job-7", "train", "trial-02") == "gs://b/tb/exp/job-7/trial-02/train"


def test_step_run_resolves_the_place_claims_only_when_asked_and_exits_in_one_line(
        tmp_path, capsys):
    root = str(tmp_path / "logs")
    with step_run("train", "", root, "exp", "", "job-1", trial="trial-01") as here:
        assert (here.run, here.label) == ("job-1", "exp/job-1")
        assert here.log_dir == os.path.join(root, "exp", "job-1", "trial-01", "train")
        assert here.checkpoint_dir("") == os.path.join(
            root + "-checkpoints", "exp", "job-1", "checkpoints", "trial-01", "train")
        assert not (tmp_path / "logs" / "exp" / "job-1" / RUN_MARKER).exists()
        here.claim()
    assert (tmp_path / "logs" / "exp" / "job-1" / RUN_MARKER).exists()
    with pytest.raises(SystemExit) as exit_info, step_run("evaluate", "", "", "exp", "", "j"):
        pass
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tbpipe: evaluate: error: log_root is empty: pass the log root every step "
                   "shares, a folder or a store URI such as gs://BUCKET/PATH, s3://BUCKET/PATH or "
                   "az://CONTAINER/PATH"]


def test_every_component_calls_the_one_preamble():
    for name in ("preprocess", "train", "evaluate", "finetune", "promote"):
        source = inspect.getsource(getattr(components, name).python_func)
        assert "with step_run(" in source and "here.claim()" in source, name
        assert "claim_run(" not in source and "exit_on_error" not in source, name
