"""``tbpipe compile``: needs no TensorFlow, and the compiled DAG is the pipeline we mean."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tbpipe.pipelines.training import PipelineParams

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "keras", "pandas", "torch")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Run ``tbpipe compile`` in a fresh interpreter with ``-X importtime``."""
    out = tmp_path_factory.mktemp("compile") / "pipeline.yaml"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "tbpipe.pipelines.cli",
                           "compile", "--package", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and line.count("|") == 2}
    return proc, imported, list(yaml.load_all(out.read_text(), Loader=yaml.CSafeLoader))[0]


def test_compile_imports_no_tensorflow(compiled):
    proc, imported, _ = compiled
    assert "wrote" in proc.stdout
    assert {"kfp", "kfp.dsl", "tbpipe.pipelines.training"} <= imported  # the trace is being read
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], f"compile imported {heavy[:5]}"


def names(spec, dag):
    return {task["taskInfo"]["name"]: (key, task) for key, task in dag["tasks"].items()}


def sub_dag(spec, task):
    return spec["components"][task["componentRef"]["name"]]["dag"]


def test_top_level_steps_and_order(compiled):
    spec = compiled[2]
    top = names(spec, spec["root"]["dag"])
    assert {"preprocess", "check-data", "train", "evaluate", "decide-finetune"} <= set(top)
    deps = {name: set(task.get("dependentTasks", [])) for name, (_, task) in top.items()}
    key = {name: k for name, (k, _) in top.items()}
    assert deps["preprocess"] == set()
    assert deps["check-data"] == {key["preprocess"]}
    assert deps["train"] == {key["preprocess"], key["check-data"]}  # strict stops it
    assert key["train"] in deps["evaluate"]
    assert deps["decide-finetune"] == {key["evaluate"], key["check-data"]}  # drifted


def test_condition_branches(compiled):
    spec = compiled[2]
    top = names(spec, spec["root"]["dag"])
    (branches_key, branches), = [v for n, v in top.items() if n.startswith("condition-branches")]
    branches = names(spec, sub_dag(spec, branches))
    assert set(branches) == {"finetune-same-data", "finetune-other-data", "keep-trained-model"}
    decision = "pipelinechannel--decide-finetune-Output"
    same = branches["finetune-same-data"][1]["triggerPolicy"]["condition"]
    other = branches["finetune-other-data"][1]["triggerPolicy"]["condition"]
    keep = branches["keep-trained-model"][1]["triggerPolicy"]["condition"]
    assert same == f"inputs.parameter_values['{decision}'] == 'same-data'"
    assert other.endswith(f"inputs.parameter_values['{decision}'] == 'other-data'")
    assert keep.count("!(") == 2

    inside = {name: names(spec, sub_dag(spec, task)) for name, (_, task) in branches.items()}
    assert set(inside["finetune-same-data"]) == {"finetune", "evaluate-finetuned", "select-model"}
    assert set(inside["finetune-other-data"]) == {"preprocess-finetune-data", "finetune",
                                                  "evaluate-finetuned", "select-model"}
    assert set(inside["keep-trained-model"]) == {"select-model"}

    same_data = inside["finetune-same-data"]["finetune"][1]["inputs"]["artifacts"]
    assert same_data["train_data"] == {
        "componentInputArtifact": "pipelinechannel--preprocess-train_data"}
    other_data = inside["finetune-other-data"]["finetune"][1]["inputs"]["artifacts"]
    prep_key = inside["finetune-other-data"]["preprocess-finetune-data"][0]
    assert other_data["train_data"]["taskOutputArtifact"]["producerTask"] == prep_key
    output = spec["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"]
    assert output["producerSubtask"] == branches_key


def test_inputs_are_the_pipeline_params(compiled):
    spec = compiled[2]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    fields = {f.name: f.default for f in dataclasses.fields(PipelineParams)}
    assert set(inputs) == set(fields)
    assert inputs["log_root"]["defaultValue"] == ""  # resolved when a run starts
    for name, default in fields.items():
        assert inputs[name].get("defaultValue", "") == default, name


@pytest.mark.parametrize("param", ["precision", "profile_batch"])
def test_train_and_finetune_get_the_precision_parameter(compiled, param):
    spec = compiled[2]
    top = names(spec, spec["root"]["dag"])
    assert top["train"][1]["inputs"]["parameters"][param] == {
        "componentInputParameter": param}
    (_, branches), = [v for n, v in top.items() if n.startswith("condition-branches")]
    for name, (_, branch) in names(spec, sub_dag(spec, branches)).items():
        tasks = names(spec, sub_dag(spec, branch))
        if "finetune" in tasks:
            assert tasks["finetune"][1]["inputs"]["parameters"][param] == {
                "componentInputParameter": f"pipelinechannel--{param}"}, name


def test_evaluate_writes_an_html_report_beside_its_other_outputs(compiled):
    spec = compiled[2]
    evaluates = [name for name in spec["components"] if name.startswith("comp-evaluate")]
    assert len(evaluates) == 3  # the trained model, the fine-tuned one in each branch
    for name in evaluates:
        outputs = spec["components"][name]["outputDefinitions"]
        assert outputs["artifacts"]["html_report"]["artifactType"]["schemaTitle"] == \
            "system.HTML"
        assert {"metrics", "classification_metrics", "report"} <= set(outputs["artifacts"])
        assert {"accuracy", "meets_target"} <= set(outputs["parameters"])


def test_component_defaults_are_the_configs_defaults():
    """KFP runs a wrapper's own source, so its signature holds literals: the configs'."""
    import dataclasses

    from tbpipe import components
    from tbpipe.components.evaluation.config import EvaluateConfig
    from tbpipe.components.finetuning.config import FinetuneConfig
    from tbpipe.components.notification.config import NotifyConfig
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.promotion.config import PromoteConfig
    from tbpipe.components.training.config import TrainConfig

    pairs = [(components.preprocess, PreprocessConfig), (components.train, TrainConfig),
             (components.finetune, FinetuneConfig), (components.evaluate, EvaluateConfig),
             (components.promote, PromoteConfig), (components.notify, NotifyConfig)]
    for component, config in pairs:
        inputs = component.component_spec.inputs
        fields = {f.name: f.default for f in dataclasses.fields(config)}
        shared = sorted(set(inputs) & set(fields))
        assert shared, component.name
        for name in shared:
            assert inputs[name].default == fields[name], (component.name, name)


def test_the_pipeline_passes_model_and_model_source_to_train(compiled):
    spec = compiled[2]
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["model"]["defaultValue"] == "builtin:cnn"
    assert inputs["model_source"]["defaultValue"] == ""
    train = names(spec, spec["root"]["dag"])["train"][1]["inputs"]["parameters"]
    assert train["model_spec"] == {"componentInputParameter": "model"}
    assert train["model_source"] == {"componentInputParameter": "model_source"}


def test_promote_runs_only_with_promote_to_after_select_and_uncached(compiled):
    spec = compiled[2]
    top = names(spec, spec["root"]["dag"])
    (_, gate), = [v for n, v in top.items() if n == "promote-if-set"]
    assert gate["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--promote_to'] != ''"
    (branches_key, _), = [v for n, v in top.items() if n.startswith("condition-branches")]
    assert branches_key in gate["dependentTasks"]  # after select-model, whichever branch ran
    (_, promote), = names(spec, sub_dag(spec, gate)).values()
    assert promote["cachingOptions"] == {}  # never reused: production may have changed
    inputs = promote["inputs"]
    assert inputs["artifacts"]["test_data"] == {
        "componentInputArtifact": "pipelinechannel--preprocess-test_data"}
    assert "oneof" in inputs["parameters"]["selection"]["componentInputParameter"]
    output = spec["root"]["dag"]["outputs"]["parameters"]["Output"]["valueFromParameter"]
    assert output["producerSubtask"] == branches_key  # the run's output: select-model's
