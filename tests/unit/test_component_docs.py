"""Every input and output of every component carries a description in the compiled YAML.

KFP reads them from the components' Google-style docstrings (``Args:`` for inputs,
``Returns:`` for outputs, output artifacts included) and the KFP UI shows them.
"""

import pytest
import yaml
from kfp import compiler

import tbpipe.components as components
from tbpipe.pipelines.sweep import parse_sweep
from tbpipe.pipelines.training import compile_pipeline


def load(path) -> dict:
    return list(yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader))[0]


def undescribed(spec: dict) -> list[str]:
    """``component: input-or-output`` for each one with no description, in every executor."""
    missing = []
    for name, component in spec["components"].items():
        if "executorLabel" not in component:  # a DAG KFP made (a condition, a loop)
            continue
        for side in ("inputDefinitions", "outputDefinitions"):
            for kind in ("parameters", "artifacts"):
                for key, value in component.get(side, {}).get(kind, {}).items():
                    if not str(value.get("description", "")).strip():
                        missing.append(f"{name}: {key}")
    return missing


@pytest.mark.parametrize("name", components.__all__)
def test_each_component_describes_every_input_and_output(name, tmp_path):
    out = tmp_path / f"{name}.yaml"
    compiler.Compiler().compile(getattr(components, name), str(out))
    spec = load(out)
    (component,) = spec["components"].values()
    described = {key for side in ("inputDefinitions", "outputDefinitions")
                 for kind in ("parameters", "artifacts")
                 for key in component.get(side, {}).get(kind, {})}
    assert described, "the component has no inputs or outputs at all"
    assert undescribed(spec) == []


@pytest.mark.parametrize("sweep", [None, ("learning_rate=0.003,0.001",)], ids=["plain", "sweep"])
def test_compiled_pipeline_describes_every_step_input_and_output(sweep, tmp_path):
    out = tmp_path / "pipeline.yaml"
    compile_pipeline(str(out), sweep=parse_sweep(sweep) if sweep else None)
    spec = load(out)
    executors = [name for name, c in spec["components"].items() if "executorLabel" in c]
    expected = {"comp-preprocess", "comp-train", "comp-evaluate", "comp-decide-finetune",
                "comp-finetune", "comp-select-model", "comp-promote"}
    if sweep:
        expected.add("comp-select-trial")
    assert expected <= set(executors)
    assert undescribed(spec) == []


def test_the_check_finds_an_undescribed_input(tmp_path):
    from kfp import dsl

    @dsl.component(base_image="python:3.11")
    def half_told(told: int, untold: str) -> str:
        """Say something.

        Args:
            told: A number.

        Returns:
            Output: The answer.
        """
        return untold * told

    out = tmp_path / "half.yaml"
    compiler.Compiler().compile(half_told, str(out))
    assert undescribed(load(out)) == ["comp-half-told: untold"]
