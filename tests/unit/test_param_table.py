"""The one table of pipeline parameters: signature, flags, params-file keys and docs from it."""

import dataclasses
import inspect
from pathlib import Path

import pytest

from tbpipe.components.common.errors import InputError, SettingError
from tbpipe.components.common.params import Param, ParamGroup
from tbpipe.components.registry import param_groups, param_table, steps, tensorflow_packages
from tbpipe.pipelines.cli import flags
from tbpipe.pipelines.cli.main import build_parser
from tbpipe.pipelines.placement import CompileOptions
from tbpipe.pipelines.training import PipelineParams, build_training_pipeline, pipeline_signature

REPO = Path(__file__).resolve().parents[2]
KFP_TYPES = {str: "String", int: "Integer", float: "Float", bool: "Boolean"}


def flag_dests(command):
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    group, = [g for g in parser._action_groups if g.title == "pipeline parameters"]
    return {a.dest for a in group._group_actions} - {"params_file"}


def test_the_compiled_inputs_are_the_table_with_its_types_defaults_and_help():
    inputs = build_training_pipeline().component_spec.inputs
    table = param_table()
    assert set(inputs) == set(table)
    for name, param in table.items():
        assert inputs[name].type == KFP_TYPES[param.type], name
        assert inputs[name].default == param.default, name
        assert inputs[name].description == param.help, name
    assert [f.name for f in dataclasses.fields(PipelineParams)] == list(table)


def test_run_and_submit_flags_and_params_file_keys_are_the_table(tmp_path):
    with_flag = {name for name, param in param_table().items() if param.flag}
    assert flag_dests("run") == flag_dests("submit") == with_flag
    file = tmp_path / "params.yaml"
    file.write_text("".join(f"{name}: {param.default!r}\n".replace("'", '"')
                            for name, param in param_table().items() if param.flag))
    assert set(flags.read_params_file(str(file))) == with_flag
    for no_flag in set(param_table()) - with_flag:  # model_source: tbpipe reads --model's file
        file.write_text(f"{no_flag}: x\n")
        with pytest.raises(InputError, match=f"unknown parameter '{no_flag}'"):
            flags.read_params_file(str(file))


def test_a_parameter_added_to_the_table_is_a_flag_and_a_pipeline_input(monkeypatch):
    @dataclasses.dataclass(frozen=True)
    class KnobConfig:
        knob_count: int = 3

        def __post_init__(self):
            if self.knob_count < 0:
                raise SettingError("knob_count", self.knob_count, "must be 0 or more")

    group = ParamGroup("knob", (Param("knob_count", "how many knobs"),), config=KnobConfig)
    assert group.params[0].type is int and group.params[0].default == 3  # the field's, once
    with pytest.raises(SettingError, match="--knob-count=-1: must be 0 or more"):
        group.validate({"knob_count": -1})
    grown = {**param_table(), "knob_count": group.params[0]}
    monkeypatch.setattr(flags, "param_table", lambda: grown)
    monkeypatch.setattr("tbpipe.pipelines.training.param_table", lambda: grown)
    parser = build_parser()
    assert parser.parse_args(["run", "--knob-count", "5"]).knob_count == 5
    assert pipeline_signature(CompileOptions()).parameters["knob_count"].default == 3


def test_a_parameter_declares_its_default_once():
    @dataclasses.dataclass(frozen=True)
    class Settings:
        rate: float = 0.5

    with pytest.raises(TypeError, match="declare it once"):
        ParamGroup("x", (Param("rate", "a rate", default=0.5),), config=Settings)
    with pytest.raises(TypeError, match="give a type"):
        ParamGroup("x", (Param("free", "no config field, no type"),))


def test_every_parameter_is_declared_once_and_bound_parameters_keep_the_configs_defaults():
    names = [p.name for group in param_groups() for p in group.params]
    assert len(names) == len(set(names)) == len(param_table())
    for group in param_groups():
        for param in group.params:
            if param.field:
                field, = [f for f in dataclasses.fields(group.config) if f.name == param.field]
                assert param.default == field.default, param.name


def test_docs_parameters_md_is_the_table():
    from tbpipe.pipelines.param_docs import parameters_markdown

    written = (REPO / "docs" / "parameters.md").read_text(encoding="utf-8")
    assert written == parameters_markdown(), (
        "docs/parameters.md is stale: python -m tbpipe.pipelines.param_docs docs/parameters.md")
    for name in param_table():
        assert f"| `{name}` |" in written


def test_the_pipeline_function_binds_by_position_as_kfp_calls_it():
    signature = pipeline_signature(CompileOptions(log_volume="tb-logs"))
    assert signature.parameters["log_root"].default == "/mnt/tbpipe-logs/logs"
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
               for p in signature.parameters.values())


def test_each_step_declares_its_place_and_the_registry_finds_them_all():
    found = {step.name for step in steps()}
    assert found == {"preprocess", "check-data", "train", "evaluate", "select", "finetune",
                     "promote", "notify"}
    from tbpipe.pipelines.placement import DEFAULT_RESOURCES, GPU_STEPS, step_kind
    from tbpipe.pipelines.runners.warm_worker import PRELOAD, WAIT_FOR

    assert set(GPU_STEPS) == {"train", "finetune"}
    assert set(DEFAULT_RESOURCES) == {"preprocess", "check-data", "train", "finetune",
                                      "evaluate", "select"}
    assert step_kind("promote") == "evaluate" and step_kind("evaluate-finetuned") == "evaluate"
    assert {m for step in steps() for m in step.preload} <= set(PRELOAD)
    assert set(WAIT_FOR) <= set(tensorflow_packages())  # the steps say which import TF
    assert all(step.package == f"tbpipe.components.{step.package.rsplit('.', 1)[1]}"
               for step in steps())
