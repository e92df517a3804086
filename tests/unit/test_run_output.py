"""What ``tbpipe run`` shows (RunDisplay over kfp.local's real line formats), and the CLI's
scripting conventions that need no pipeline run: --params-file, completion, help, the next
step's command. The whole-pipeline checks are in tests/integration/test_run_output.py.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.progress import MARKER, parse, report, report_result
from tbpipe.pipelines.cli.flags import params_from_args
from tbpipe.pipelines.cli.main import build_parser
from tbpipe.pipelines.runners.run_display import RunDisplay, task_display_names
from tbpipe.pipelines.training import build_training_pipeline
from tests.helpers import TBPIPE

CYAN, GREEN, RESET = "\x1b[96m", "\x1b[92m", "\x1b[0m"


def kfp_task(name: str, output: list[str]) -> str:
    """A task as kfp.local 2.x prints it: log lines, executor JSON, the indented step output."""
    return "".join([
        f"18:22:08.061 - INFO - Executing task {CYAN}'{name}'{RESET}\n",
        "18:22:08.061 - INFO - Streamed logs:\n\n",
        "    [KFP Executor 2026-12-01 18:22:08,500 INFO]: Got executor_input:\n",
        '    {\n        "inputs": {\n            "parameterValues": {"epochs": 1}\n    }\n',
        *(f"    {line}\n" for line in output),
        "    \n\n",
        f"18:22:13.054 - INFO - Task {CYAN}'{name}'{RESET} finished with status "
        f"{GREEN}SUCCESS{RESET}\n",
        f"18:22:13.055 - INFO - Task {CYAN}'{name}'{RESET} outputs:\n    Output: 'x'\n",
        "-" * 80 + "\n",
    ])


def marker(step: str, event: str, **fields: object) -> str:
    return MARKER + json.dumps({"step": step, "event": event, **fields})


def show(text: str, live: bool = False, chunk: int = 7) -> tuple[RunDisplay, str, str]:
    """Feed ``text`` to a RunDisplay in small pieces (as a pipe delivers it)."""
    screen, log = io.StringIO(), io.StringIO()
    display = RunDisplay(screen, log, {"evaluate-2": "evaluate-finetuned"}, live=live)
    for start in range(0, len(text), chunk):
        display.write(text[start:start + chunk])
    return display, screen.getvalue(), log.getvalue()


TRAIN_OUTPUT = [marker("train", "batch", batch=1, batches=40, epoch=1, epochs=2),
                marker("train", "batch", batch=40, batches=40, epoch=1, epochs=2),
                marker("train", "epoch", epoch=1, epochs=2, loss=1.5, val_accuracy=0.75),
                "40/40 - 4s - 88ms/step - accuracy: 0.8650",
                marker("train", "epoch", epoch=2, epochs=2, loss=1.0, val_accuracy=0.8125),
                marker("train", "result", figure="val_accuracy 0.8125")]
RUN = (kfp_task("train", TRAIN_OUTPUT)
       + kfp_task("evaluate-2", [marker("evaluate-finetuned", "result",
                                        figure="test accuracy 0.9100")]))


def test_quiet_display_is_one_line_per_step_start_and_end_and_epochs():
    _, screen, log = show(RUN)
    lines = screen.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["train", "started"], ["train", "epoch"], ["train", "epoch"], ["✓", "train"],
        ["evaluate-finetuned", "started"], ["✓", "evaluate-finetuned"]], screen
    assert lines[3].endswith("s  val_accuracy 0.8125")
    assert "epoch 2/2" in lines[2] and "val_accuracy 0.8125" in lines[2]
    assert lines[5].endswith("test accuracy 0.9100")
    assert "executor_input" not in screen and "{" not in screen and "\x1b" not in screen
    assert log == RUN  # the log file gets every byte


def test_a_sweep_trial_shows_under_its_own_name():
    trial = [marker("train", "label", label="train trial-02"),
             marker("train", "epoch", epoch=1, epochs=1, val_accuracy=0.5),
             marker("train", "result", figure="val_accuracy 0.5000")]
    _, screen, _ = show(kfp_task("train", trial))
    lines = screen.splitlines()
    assert lines[1].split()[:3] == ["train", "trial-02", "epoch"], screen
    assert lines[2].startswith("✓ train trial-02") and lines[2].endswith("val_accuracy 0.5000")


def test_live_display_draws_a_bar_and_ends_each_step_on_one_line():
    _, screen, _ = show(RUN, live=True)
    assert "[" + "#" * 24 + "] 40/40" in screen and "\r\x1b[K" in screen
    finished = [part for part in screen.split("\n") if part]
    assert finished[0].rsplit("\r\x1b[K", 1)[-1].startswith("✓ train")
    assert finished[1].rsplit("\r\x1b[K", 1)[-1].startswith("✓ evaluate-finetuned")
    assert len(finished) == 2


def test_verbose_passes_everything_through():
    screen, log = io.StringIO(), io.StringIO()
    display = RunDisplay(screen, log, {}, verbose=True)
    display.write(RUN)
    assert screen.getvalue() == RUN == log.getvalue()


def test_a_failing_step_shows_its_last_lines_and_the_log_path():
    output = [f"line {k}" for k in range(30)] + ["tbpipe: preprocess: error: x.csv: no 'label'"]
    text = kfp_task("preprocess", output).split("18:22:13.054")[0]  # kfp.local raises instead
    display, _, _ = show(text)
    screen = io.StringIO()
    display.screen = screen
    display.failed("/runs/r1.log")
    lines = screen.getvalue().splitlines()
    assert lines[0].startswith("✗ preprocess") and "failed" in lines[0]
    assert [line.strip() for line in lines[1:-1]] == \
        [f"line {k}" for k in range(11, 30)] + ["tbpipe: preprocess: error: x.csv: no 'label'"]
    assert lines[-1] == "  full log: /runs/r1.log"
    assert display.errors == [("preprocess", "x.csv: no 'label'")]


def test_task_display_names_come_from_the_compiled_spec():
    names = task_display_names(build_training_pipeline().pipeline_spec)
    assert names["evaluate-2"] == names["evaluate-3"] == "evaluate-finetuned"
    assert names["select-model-2"] == "select-model" and names["preprocess-2"] == \
        "preprocess-finetune-data"


def test_progress_markers_round_trip(capsys):
    report("train", "epoch", epoch=1, epochs=3, val_accuracy=0.5)
    report_result("train", "val_accuracy 0.5000")
    first, second = capsys.readouterr().out.splitlines()
    assert parse("    " + first) == {"step": "train", "event": "epoch", "epoch": 1, "epochs": 3,
                                    "val_accuracy": 0.5}
    assert parse(second)["figure"] == "val_accuracy 0.5000"
    assert parse("loss: 0.1") is None and parse(MARKER + "{not json") is None


# ---- --params-file --------------------------------------------------------------------------

def run_params(*argv: str):
    return params_from_args(build_parser().parse_args(["run", *argv]))


def test_params_file_yaml_and_json_and_flags_win(tmp_path):
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("epochs: 5\nbatch_size: 16\nfinetune-epochs: 2\nresume: true\n"
                         "learning_rate: 1\n")
    params = run_params("--params-file", str(yaml_file), "--epochs", "3")
    assert (params.epochs, params.batch_size, params.finetune_epochs, params.resume) == \
        (3, 16, 2, True)
    assert params.learning_rate == 1.0 and isinstance(params.learning_rate, float)
    json_file = tmp_path / "p.json"
    json_file.write_text(json.dumps({"precision": "float32", "data": "builtin:mnist"}))
    params = run_params("--params-file", str(json_file))
    assert (params.precision, params.data, params.epochs) == ("float32", "builtin:mnist", 10)


@pytest.mark.parametrize("text, needle", [
    ("epochs: ten\n", "epochs: expected an integer, got \"ten\""),
    ("resume: 1\n", "resume: expected true or false"),
    ("model_source: x\n", "unknown parameter 'model_source'"),
    ("precision: half\n", "--precision"),
])
def test_params_file_errors_name_the_file_and_the_key(tmp_path, text, needle):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=None) as caught:
        run_params("--params-file", str(path))
    assert needle in str(caught.value)


def test_missing_params_file_is_one_line(tmp_path):
    proc = subprocess.run([*TBPIPE, "run", "--params-file", str(tmp_path / "none.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (f"tbpipe: error: --params-file {tmp_path / 'none.yaml'}: "
                                   "No such file or directory")


# ---- help, completion, the next step ----------------------------------------------------------

def test_help_lists_allowed_values_and_data_formats():
    proc = subprocess.run([*TBPIPE, "run", "--help"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0
    for needle in ("one of auto, always, never", "auto|float32|mixed_float16|mixed_bfloat16",
                   ".parquet", "MNIST IDX", "builtin:digits", "--params-file",
                   "--output {text,json}", "--verbose"):
        assert needle in proc.stdout, needle
    top = subprocess.run([*TBPIPE, "--help"], capture_output=True, text=True, timeout=120)
    assert "``" not in top.stdout and ":mod:" not in top.stdout and "completion" in top.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_script_names_the_sub_commands(shell):
    proc = subprocess.run([*TBPIPE, "completion", shell], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("compile", "run", "submit", "tensorboard", "build-images", "predict"):
        assert command in proc.stdout
    if shell == "zsh":
        assert proc.stdout.startswith("autoload -U +X bashcompinit")


def test_bash_completes_sub_commands_flags_and_values(tmp_path):
    script = subprocess.run([*TBPIPE, "completion", "bash"], capture_output=True, text=True,
                            timeout=120).stdout
    (tmp_path / "c.sh").write_text(script)
    probe = ('source c.sh; complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); '
             '_tbpipe; echo "${COMPREPLY[*]}"; }; complete_words tbpipe su; '
             'complete_words tbpipe run --finetune ""; complete_words tbpipe submit --end; '
             'complete_words tbpipe compile --output j')
    out = subprocess.run(["bash", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60).stdout.splitlines()
    assert out == ["submit", "auto always never", "--endpoint", "json"]


def test_the_printed_tbpipe_command_runs_without_the_venv_on_path(tmp_path):
    code = "from tbpipe.pipelines.cli.output import tbpipe_command; print(tbpipe_command())"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    command = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=60).stdout.strip()
    assert command != "tbpipe"
    proc = subprocess.run(f"{command} --version", shell=True, capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("tbpipe "), proc.stderr


def test_tensorboard_passes_its_own_flags_through():
    args = build_parser().parse_args(["tensorboard", "--host", "0.0.0.0", "--",
                                      "--samples_per_plugin=scalars=500", "--window_title", "x"])
    assert args.host == "0.0.0.0"
    assert args.tensorboard_args == ["--samples_per_plugin=scalars=500", "--window_title", "x"]


def test_tensorboard_frontend_drops_the_no_tensorflow_notice():
    from tbpipe.pipelines.runners.tensorboard_frontend import DropNotice

    stream = io.StringIO()
    err = DropNotice(stream)
    print("TensorFlow installation not found - running with reduced feature set.", file=err)
    print("Serving TensorBoard on localhost", file=err)
    assert stream.getvalue() == "Serving TensorBoard on localhost\n"
