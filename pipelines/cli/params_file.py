"""``--params-file``: pipeline parameters from a YAML or JSON file, each value meaning one thing.

YAML 1.1 (what PyYAML reads) and YAML 1.2 / JSON disagree on plain values: ``yes`` and
``on`` are booleans in 1.1 and text in 1.2, ``0123`` is octal 83 in 1.1, ``1e-3`` is text in
1.1 and a number in 1.2, ``1_000`` and ``1:30`` are numbers only in 1.1. Guessing wrong
trains on a value the user never wrote, so this reader takes the file's *text* of each value
and types it by the parameter it sets (the parameter table,
:func:`tbpipe.components.registry.param_table`):

- true/false: ``true`` or ``false`` only; ``yes``/``no``/``on``/``off`` are refused.
- integers: decimal digits only (``0123``, ``1_000``, ``0x10``, ``1:30``, ``1e3`` refused).
- numbers: JSON's form (``0.001``, ``1e-3``, ``5``) and ``.inf``/``.nan`` (refused later by
  the parameter's own check, with its rule).
- text: as written; a plain ``yes``, ``No``, ``ON``, ``off``, ``true``, ``null``, ``~``... is
  refused as ambiguous (quote it), and a quoted value is always text.

Refused with one line naming the file: more than ``MAX_PARAMS_FILE_BYTES`` (checked before
reading), anything but a regular file (a FIFO would block), bytes that are not UTF-8 text, a
NUL byte, more than one document, anchors and aliases (an alias expands without bound, in
the value and in an error line quoting it), explicit tags, a key given twice (also as
``finetune-epochs`` and ``finetune_epochs``), an unknown key, a list or mapping as a value.
"""

from __future__ import annotations

import json
import os
import re
import typing

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.limits import MAX_PARAMS_FILE_BYTES
from tbpipe.components.common.regular_files import read_bounded

_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9]+")
_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_SPECIAL_FLOATS = {".inf": "inf", "+.inf": "inf", "-.inf": "-inf", ".nan": "nan"}
_BOOLEANS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False,
             "FALSE": False}
#: Plain values YAML 1.1 or 1.2 reads as booleans or null: ambiguous as text (``y``/``n``,
#: booleans in the 1.1 spec only, are read as text by PyYAML, YAML 1.2 and JSON alike).
_NULLS = {"null", "Null", "NULL", "~", ""}
_NOT_TEXT = {*_NULLS, *(w for word in ("yes", "no", "on", "off", "true", "false")
                        for w in (word, word.capitalize(), word.upper()))}
_SHOWN = 60  # characters of a value quoted in an error line


def read_params_file(path: str) -> dict[str, object]:
    """Pipeline parameters from a YAML or JSON file, typed as the parameter table says.

    Args:
        path: The local file ``--params-file`` names.

    Returns:
        ``{parameter name: value}`` for the keys the file gives (``finetune-epochs`` is
        ``finetune_epochs``); values are ``bool``, ``int``, ``float`` or ``str``.

    Raises:
        InputError: one line ``--params-file PATH: ...`` naming what is wrong and where.

    """
    import yaml

    name = f"--params-file {path}"
    if not os.path.lexists(path):
        raise InputError(f"{name}: No such file or directory")
    data = read_bounded(name, path, MAX_PARAMS_FILE_BYTES, "params file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x})"
                         "; write the parameters as YAML or JSON text") from None
    if "\x00" in text:
        raise InputError(f"{name}: holds a NUL byte (binary content); write the parameters "
                         "as YAML or JSON text")
    try:
        _check_events(name, yaml.parse(text, Loader=yaml.SafeLoader))
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"{name}: not YAML or JSON ({first[:120]})") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        kind = "list" if isinstance(root, yaml.SequenceNode) else "str"
        raise InputError(f"{name}: expected a mapping of parameter names to values, got {kind}")
    from tbpipe.components.registry import param_table

    # the keys are the parameters that have a flag (``model_source`` has none: tbpipe sets it)
    kinds = {key: param.type for key, param in param_table().items() if param.flag}
    known = sorted(kinds)
    values: dict[str, object] = {}
    for key_node, value_node in root.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise InputError(f"{name}: line {key_node.start_mark.line + 1}: a key must be a "
                             "parameter name")
        key = key_node.value
        field = key.replace("-", "_")
        if field not in kinds:
            raise InputError(f"{name}: unknown parameter {_shown(key, repr)} (known: "
                             f"{', '.join(known)})")
        if field in values:
            raise InputError(f"{name}: {field} is given twice (line "
                             f"{key_node.start_mark.line + 1}); keep one")
        values[field] = typed_value(name, field, value_node, kinds[field], text)
    return values


def _check_events(name: str, events: typing.Iterable) -> None:
    """Refuse anchors, aliases, explicit tags and a second document, from the parse events."""
    import yaml

    documents = 0
    for event in events:
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise InputError(f"{name}: holds more than one YAML document (line "
                                 f"{event.start_mark.line + 1}); keep one mapping")
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise InputError(f"{name}: line {event.start_mark.line + 1}: YAML anchors and "
                             "aliases (& and *) are not read; write each value out")
        if isinstance(event, yaml.NodeEvent) and getattr(event, "tag", None):
            raise InputError(f"{name}: line {event.start_mark.line + 1}: YAML tags "
                             f"({event.tag}) are not read; write plain values")


def _shown(value: str, quote: typing.Callable[[str], str] = json.dumps) -> str:
    """``value`` quoted (``json.dumps`` by default), cut to ``_SHOWN`` characters."""
    text = quote(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN - 4] + "..." + text[0]


def typed_value(name: str, field: str, node: object, kind: object, text: str) -> object:
    """The value of ``node`` (a YAML node of ``text``) as ``field``'s type ``kind``.

    Raises:
        InputError: the node is not a plain value of that type, or means different things
            in YAML 1.1 and 1.2 (see the module doc).

    """
    import yaml

    expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, "text")

    def refuse(got: str, advice: str = "") -> InputError:
        return InputError(f"{name}: {field}: expected {expected}, got {got}"
                          + (f"; {advice}" if advice else ""))

    if not isinstance(node, yaml.ScalarNode):
        source = text[node.start_mark.index:node.end_mark.index]  # type: ignore[attr-defined]
        source = source if len(source) <= _SHOWN else source[:_SHOWN - 3] + "..."
        raise refuse(source)
    value, quoted = node.value, node.style in ("'", '"')
    if any("\ud800" <= c <= "\udfff" for c in value):
        # JSON writes a character beyond U+FFFF as two escapes ("\ud83d\ude00"), which
        # PyYAML keeps apart: join them; a lone half is not text.
        try:
            value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise refuse("an escape that is half a character (a lone surrogate)") from None
    if kind is str:
        if not quoted and value in _NOT_TEXT:
            raise refuse(f"{value or 'nothing'} (YAML reads it as "
                         f"{'null' if value in _NULLS else 'true/false'})",
                         f'quote it ("{value}") if you mean the text')
        return value
    if quoted:
        raise refuse(f"the text {_shown(value)}", "write it without quotes")
    if kind is bool:
        if value in _BOOLEANS:
            return _BOOLEANS[value]
        advice = ("YAML 1.1 and 1.2 read it differently" if value in _NOT_TEXT else "")
        raise refuse(_shown(value), advice)
    if kind is int:
        if _INT.fullmatch(value):
            return int(value)
        advice = ("a leading zero reads as octal in YAML 1.1; write it without"
                  if _LEADING_ZERO.fullmatch(value) else "write it in decimal digits")
        raise refuse(_shown(value), advice)
    if kind is float:
        if _NUMBER.fullmatch(value):
            return float(value)
        if value.lower() in _SPECIAL_FLOATS:
            return float(_SPECIAL_FLOATS[value.lower()])
        raise refuse(_shown(value), "write it like 0.001 or 1e-3")
    raise refuse(_shown(value))
