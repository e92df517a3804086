import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.pipelines.cli.flags import params_from_args
from tbpipe.pipelines.cli.main import build_parser
from tbpipe.pipelines.training import PipelineParams


def parse(*argv):
    return params_from_args(build_parser().parse_args(["run", *argv]))


def test_flags_map_to_params():
    params = parse("--epochs", "3", "--finetune", "always", "--accuracy-target", "0.5",
                   "--run-name", "r1", "--finetune-epochs", "2")
    assert (params.epochs, params.finetune, params.accuracy_target) == (3, "always", 0.5)
    assert (params.run_name, params.finetune_epochs) == ("r1", 2)
    assert params.data == PipelineParams().data


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs=0: must be a positive integer"),
    (["--learning-rate", "-1"], "--learning-rate=-1.0: must be greater than 0"),
    (["--accuracy-target", "1.5"], "--accuracy-target=1.5: outside"),
    (["--val-fraction", "0.6", "--test-fraction", "0.5"], "must be below 1"),
    (["--freeze-layers", "-2"], "--freeze-layers=-2: must be 0 or a positive integer"),
])
def test_out_of_range_params(argv, message):
    with pytest.raises(InputError, match=message):
        parse(*argv)


def test_choices_are_listed_in_help_and_checked_once_by_the_config():
    with pytest.raises(InputError, match="--finetune='sometimes': must be one of"):
        parse("--finetune", "sometimes")
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "auto|always|never" in help_text and "mixed_bfloat16" in help_text


def test_unknown_runner_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--runner", "k8s"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid choice" in err[0]
