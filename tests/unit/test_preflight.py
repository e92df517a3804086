"""Pre-flight: each step declares its check; one function runs them for run and submit."""

import ast
from pathlib import Path

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.pipelines.preflight import check
from tbpipe.pipelines.sweep import parse_sweep
from tbpipe.pipelines.training import PipelineParams

REPO = Path(__file__).resolve().parents[2]


def test_a_good_local_run_passes(tmp_path):
    (tmp_path / "train.csv").write_text("label,pixel0\n1,0\n")
    check(PipelineParams(data=str(tmp_path / "train.csv"), promote_to=str(tmp_path / "prod")))


@pytest.mark.parametrize(("params", "match"), [
    (dict(data="{tmp}/gone.csv"), "--data {tmp}/gone.csv: no such file, folder or object"),
    (dict(finetune_data="{tmp}/gone"), "--finetune-data {tmp}/gone: no such file"),
    (dict(model="{tmp}/gone.keras"), "--model {tmp}/gone.keras: no such .keras file"),
    (dict(model="{tmp}/net.py:build"), "--model {tmp}/net.py:build: no such Python file"),
    (dict(promote_to="{tmp}/prod", baseline_model="{tmp}/old"),
     "--baseline-model {tmp}/old: no such file"),
    (dict(promote_to="{tmp}/prod.keras"), "promote to a folder"),
])
def test_each_steps_check_refuses_in_one_line_before_a_local_run(tmp_path, params, match):
    given = {key: value.format(tmp=tmp_path) for key, value in params.items()}
    with pytest.raises(InputError, match=match.format(tmp=tmp_path)) as err:
        check(PipelineParams(**given))
    assert len(str(err.value).splitlines()) == 1


def test_a_cluster_run_checks_only_what_is_read_here(tmp_path):
    check(PipelineParams(data="/mnt/tbpipe-data/train.csv", model="/on/the/cluster.keras"),
          local=False)
    with pytest.raises(InputError, match="cannot read .*net.py"):  # its text travels
        check(PipelineParams(model=f"{tmp_path}/net.py:build"), local=False)


def test_every_swept_model_is_checked(tmp_path):
    (tmp_path / "net.py").write_text("def build(shape, classes): ...\n")
    sweep = parse_sweep([f"model=builtin:cnn,{tmp_path}/net.py:build,{tmp_path}/gone.keras"])
    with pytest.raises(InputError, match="gone.keras: no such .keras file"):
        check(PipelineParams(), sweep)


def test_the_model_is_parsed_once_from_the_flags_to_the_local_run(monkeypatch):
    from tbpipe.components.training import config
    from tbpipe.pipelines.cli.flags import params_from_args
    from tbpipe.pipelines.cli.main import build_parser
    from tbpipe.pipelines.runners.local import resolved_for_local_run

    calls = []
    parse = config._parse_model
    monkeypatch.setattr(config, "_parse_model", lambda *a: calls.append(a) or parse(*a))
    params = params_from_args(build_parser().parse_args(["run", "--model", "pkg.nets:build"]))
    check(params)
    resolved = resolved_for_local_run(params)
    assert resolved.model.kind == "module" and resolved.model == "pkg.nets:build"
    assert len(calls) == 1, calls


RUNNERS = ("pipelines/runners/local.py", "pipelines/runners/docker.py",
           "pipelines/runners/submit.py", "pipelines/sweep.py", "pipelines/training.py",
           "pipelines/cli/run.py", "pipelines/cli/submit.py", "pipelines/cli/flags.py")


def test_runners_import_no_step_internals():
    """A step's public face is its config.py and step.py; the rest stays inside the step.

    Two more public modules: the train step's worker placement (``launcher/placement.py``),
    the JSON contract that compile options build for a multi-worker step's workers; and the
    notify step's logic (``notification/core.py``), which a local run calls itself to send its
    outcome, since kfp.local runs no exit handler (on a cluster the notify exit task does).
    """
    steps = {path.parent.name for path in (REPO / "components").glob("*/step.py")}
    assert {"training", "notification", "data_checks", "promotion"} <= steps
    for path in RUNNERS:
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] == ["tbpipe", "components"] and len(parts) > 3 \
                        and parts[2] in steps:
                    public = parts[3] in ("config", "step") \
                        or parts[2:] in (["training", "launcher", "placement"],
                                         ["notification", "core"])
                    assert public, f"{path} imports {node.module}"
