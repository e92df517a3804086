"""Pipeline parameters, each declared once: name, type, default, help, choices, its check.

A step declares the pipeline parameters it owns in its ``config.py`` as a :class:`ParamGroup`
bound to its config class: a parameter that sets a config field takes the field's type and
default (one default) and is checked by building the config (one validation); one that sets
no field declares its own type and default. ``tbpipe.components.registry.param_table``
gathers every group; the pipeline's signature, ``PipelineParams``, the CLI flags, the
``--params-file`` keys and ``docs/parameters.md`` all come from that table.
No kfp, numpy or TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Mapping

from tbpipe.components.common.errors import SettingError

#: The seed every step starts from unless told otherwise (preprocess' split, train's weights).
DEFAULT_SEED = 42
_TYPES = (str, int, float, bool)


class _Unset:
    """No default given (the config field's applies)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset()


@dataclasses.dataclass(frozen=True)
class Param:
    """One pipeline parameter.

    Attributes:
        name: The pipeline's input name, the ``--params-file`` key; the flag is
            ``--name-with-dashes``.
        help: What it does, for ``--help``, the docs table and the compiled spec.
        type: ``str``, ``int``, ``float`` or ``bool``; taken from the config field when the
            parameter sets one.
        default: Its default; taken from the config field when the parameter sets one.
        field: The config field it sets, where the name differs (``finetune_epochs`` sets
            FinetuneConfig's ``epochs``).
        choices: The allowed values, where there is a fixed set (``--help`` lists them).
        flag: False for a parameter tbpipe sets itself (no flag, no params-file key).
        parse: Text -> the typed value that travels from the edge on (``model``), once.
        local_path: It names a file or folder: a local run makes a relative path absolute
            (its steps may run in another folder or a container).
        repeatable: The flag may be given more than once (``--notify A --notify B``); the
            values travel as one text, separated by spaces (a ``str`` parameter).

    """

    name: str
    help: str
    type: type | None = None
    default: object = UNSET
    field: str = ""
    choices: tuple[str, ...] = ()
    flag: bool = True
    parse: Callable[[object], object] | None = None
    local_path: bool = False
    repeatable: bool = False

    @property
    def flag_name(self) -> str:
        """``--finetune-epochs`` for ``finetune_epochs``."""
        return "--" + self.name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """The pipeline parameters one part of tbpipe owns, and what checks them.

    Attributes:
        owner: Who declares them (``run place``, ``train``, ...), for the docs table.
        params: The parameters; those naming a field of ``config`` take its type and default.
        config: The frozen settings class whose construction checks the bound parameters.
        check: Rules across parameters (``--baseline-model needs --promote-to``): called
            with every parameter's value by name; raises SettingError/InputError.

    """

    owner: str
    params: tuple[Param, ...]
    config: type | None = None
    check: Callable[[Mapping[str, object]], None] | None = None

    def __post_init__(self) -> None:
        """Resolve each bound parameter's type and default from its config field."""
        hints = typing.get_type_hints(self.config) if self.config else {}
        fields = ({f.name: f for f in dataclasses.fields(self.config)} if self.config
                  else {})
        resolved = []
        for param in self.params:
            field = fields.get(param.field or param.name)
            if param.field and field is None:
                raise TypeError(f"{param.name}: {self.config.__name__} has no field "
                                f"{param.field!r}")
            if field is not None:
                if param.default is not UNSET:
                    raise TypeError(f"{param.name}: its default is the config field's; "
                                    "declare it once, there")
                param = dataclasses.replace(param, type=hints[field.name],
                                            default=field.default, field=field.name)
            if param.type not in _TYPES or param.default is UNSET:
                raise TypeError(f"{param.name}: give a type among str/int/float/bool and a "
                                "default (or bind it to a config field)")
            resolved.append(param)
        object.__setattr__(self, "params", tuple(resolved))

    def bound(self) -> dict[str, Param]:
        """The config field -> the parameter that sets it."""
        return {p.field: p for p in self.params if p.field}

    def validate(self, values: Mapping[str, object]) -> None:
        """Check the group's parameters in ``values``; errors name the flags.

        The group's rules across parameters first; then the config is built from the bound
        parameters (its own checks, once); a parameter with choices and no config field is
        checked against them.
        """
        if self.check is not None:  # first: "--force-promote needs --promote-to" says more
            self.check(values)
        bound = self.bound()
        if self.config is not None and bound:
            try:
                self.config(**{field: values[p.name] for field, p in bound.items()})
            except SettingError as exc:  # name the flags: "--val-fraction + --test-fraction"
                flags = {field: p.flag_name for field, p in bound.items()}
                name = re.sub(r"\w+", lambda m: flags.get(m[0], m[0]), exc.name)
                raise SettingError(name, exc.value, exc.rule) from None
        for param in self.params:
            if param.choices and not param.field and values[param.name] not in param.choices:
                raise SettingError(param.flag_name, values[param.name],
                                   f"must be one of {', '.join(param.choices)}")
