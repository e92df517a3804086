"""The local runner's warm worker: steps forked from a zygote that imported TensorFlow once."""

import os

import pytest
from kfp import dsl, local
from packaging.specifiers import SpecifierSet

from tbpipe.pipelines import kfp_compat
from tbpipe.pipelines.runners.warm_worker import (
    WarmWorker,
    install,
    start_warm_worker,
    step_program,
    stop_warm_worker,
)

pytestmark = pytest.mark.slow


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def where_am_i(text: str) -> str:
    """Return the text, this process's parent id and whether TensorFlow was imported already."""
    import os
    import sys

    return f"{text}|{os.getppid()}|{'tensorflow' in sys.modules}|{os.getcwd()}"


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fails_with_one_line(path: str) -> str:
    """Fail the way tbpipe's steps do: one error line, exit status 1."""
    from tbpipe.components.common.errors import InputError, exit_on_error

    with exit_on_error("failing-step"):
        raise InputError(f"{path}: no such file; pass an existing one")
    return path


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path_factory.mktemp("kfp")), raise_on_error=True)
    started = start_warm_worker()
    assert started is not None and started.ready(), open(started.log_path).read()
    yield started
    stop_warm_worker()


def test_step_program_reads_kfp_lightweight_command():
    container = where_am_i.component_spec.implementation.container
    source, args = step_program(["sh", *container.command[1:], *container.args])
    assert "def where_am_i(text: str) -> str:" in source
    assert args[0] == "--executor_input" and args[-2:] == ["--function_to_execute", "where_am_i"]
    assert step_program(["python3", "-m", "kfp.dsl.executor_main"]) is None


def test_steps_run_forked_from_the_warm_worker(worker):
    text, parent, tensorflow, cwd = where_am_i(text="hello").output.split("|")
    assert text == "hello" and int(parent) == worker.process.pid
    assert tensorflow == "True"  # imported by the zygote, before the fork
    assert cwd == os.getcwd()


def test_the_zygote_imported_tensorflow_without_starting_its_threads(worker):
    # The zygote refuses to serve when TensorFlow started threads (tensorflow_threads);
    # it served the step above, and its own thread names say the same.
    names = [open(f"/proc/{worker.process.pid}/task/{task}/comm").read().strip()
             for task in os.listdir(f"/proc/{worker.process.pid}/task")]
    assert names and not [name for name in names if name.startswith("tf_")], names


def test_a_failing_step_gives_its_error_line_and_fails(worker, capsys):
    with pytest.raises(RuntimeError):
        fails_with_one_line(path="/nowhere.csv")
    out = capsys.readouterr().out
    assert "tbpipe: failing-step: error: /nowhere.csv: no such file; pass an existing one" in out


def test_without_a_worker_steps_run_as_plain_subprocesses(worker):
    stop_warm_worker()
    broken = WarmWorker()
    broken.process.kill()  # a zygote that died before it served
    broken.process.wait()
    undo = install(broken)
    try:
        assert not broken.ready(timeout_s=5)
        text, parent, tensorflow, _ = where_am_i(text="plain").output.split("|")
    finally:
        undo()
        broken.stop()
    # a fresh python (under kfp's sh), which has not imported TensorFlow
    assert text == "plain" and int(parent) != broken.process.pid and tensorflow == "False"


def test_an_unchecked_kfp_leaves_the_runner_alone(monkeypatch):
    monkeypatch.setattr(kfp_compat, "CHECKED_KFP", SpecifierSet(">=99"))
    assert start_warm_worker() is None


@pytest.mark.integration
def test_a_local_run_gives_the_same_results_with_and_without_the_worker(tmp_path):
    from tbpipe.pipelines.runners.local import run_pipeline
    from tbpipe.pipelines.training import PipelineParams

    summaries = {}
    for warm in (True, False):
        params = PipelineParams(epochs=1, finetune="never", seed=7, run_name=f"warm-{warm}",
                                log_root=str(tmp_path / "logs"))
        result = run_pipeline(params, pipeline_root=str(tmp_path / f"kfp-{warm}"),
                              warm_worker=warm)
        summaries[warm] = result.summary
        assert os.path.isfile(os.path.join(result.summary["model_uri"], "model.keras"))
    assert summaries[True]["accuracy"] == summaries[False]["accuracy"], summaries
    assert 0 < summaries[True]["final_accuracy"] <= 1
