"""Pipeline parameters and compile options: defined once, shared by compile, run and submit."""

from __future__ import annotations

import argparse
import dataclasses
import os

from components.common.errors import InputError
from components.train.config import PRECISIONS

DEFAULT_HOME = "tbpipe-runs"
FINETUNE_MODES = ("auto", "always", "never")


@dataclasses.dataclass(frozen=True)
class PipelineParams:
    """Run-time parameters of the training pipeline (the compiled spec's inputs)."""

    data: str = "builtin:digits"
    finetune_data: str = ""
    log_root: str = os.path.abspath(os.path.join(DEFAULT_HOME, "logs"))
    experiment: str = "default"
    run_name: str = ""
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.001
    seed: int = 42
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    accuracy_target: float = 0.95
    finetune: str = "auto"
    finetune_epochs: int = 3
    finetune_learning_rate: float = 0.0001
    freeze_layers: int = 0
    tensorboard_url: str = "http://127.0.0.1:6006"
    checkpoint_root: str = ""
    precision: str = "auto"

    def validate(self) -> PipelineParams:
        """Check ranges before anything runs; InputError names the parameter."""
        checks = [
            (self.epochs > 0, "--epochs must be > 0"),
            (self.finetune_epochs > 0, "--finetune-epochs must be > 0"),
            (self.batch_size > 0, "--batch-size must be > 0"),
            (self.learning_rate > 0, "--learning-rate must be > 0"),
            (self.finetune_learning_rate > 0, "--finetune-learning-rate must be > 0"),
            (0 <= self.accuracy_target <= 1, "--accuracy-target must be in [0, 1]"),
            (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
             and self.val_fraction + self.test_fraction < 1,
             "--val-fraction and --test-fraction must each be in [0, 1) and sum below 1"),
            (self.finetune in FINETUNE_MODES,
             f"--finetune must be one of {', '.join(FINETUNE_MODES)}"),
            (self.freeze_layers >= 0, "--freeze-layers must be >= 0"),
            (self.precision in PRECISIONS,
             f"--precision must be one of {', '.join(PRECISIONS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"{message} (got {self._value_for(message)})")
        return self

    def _value_for(self, message: str) -> object:
        name = message.split()[0].lstrip("-").replace("-", "_")
        return getattr(self, name, "?")

    def as_arguments(self) -> dict[str, object]:
        """The parameters as pipeline arguments."""
        return dataclasses.asdict(self)


def add_param_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per PipelineParams field (``--finetune-epochs`` for finetune_epochs)."""
    group = parser.add_argument_group("pipeline parameters")
    for field in dataclasses.fields(PipelineParams):
        flag = "--" + field.name.replace("_", "-")
        kind = {"int": int, "float": float}.get(str(field.type), str)
        group.add_argument(flag, dest=field.name, type=kind, default=None,
                           metavar=field.name.upper(),
                           help=f"default: {field.default!r}")


def params_from_args(args: argparse.Namespace, **overrides: object) -> PipelineParams:
    """PipelineParams from parsed flags (unset flags keep their defaults)."""
    values = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(PipelineParams)}
    values = {k: v for k, v in values.items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PipelineParams(**values).validate()
