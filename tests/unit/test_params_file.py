"""``--params-file`` values mean one thing or are refused (issue 23): each case below was
read silently as something else before (``yes`` as true, ``010`` as 8, ``1e-3`` as text, an
alias expanded, the last of two equal keys kept, a second document ignored)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.pipelines.cli.params_file import read_params_file


@pytest.mark.parametrize(("text", "expected"), [
    ("learning_rate: 1e-3\n", {"learning_rate": 0.001}),  # YAML 1.1: the text '1e-3'
    ("run_name: 0123\n", {"run_name": "0123"}),  # YAML 1.1: the number 83
    ("run_name: '0123'\nresume: true\n", {"run_name": "0123", "resume": True}),
    ('{"epochs": 3, "data": "builtin:digits", "model": "\\ud83d\\ude00"}',
     {"epochs": 3, "data": "builtin:digits", "model": "\U0001F600"}),
    ("learning_rate: .nan\n", None),  # read as nan: the parameter's own check refuses it
    ("# only a comment\n", {}),
])
def test_values_are_read_as_written(tmp_path: Path, text: str, expected: dict | None) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    values = read_params_file(str(path))
    if expected is None:
        assert values["learning_rate"] != values["learning_rate"]
    else:
        assert values == expected


@pytest.mark.parametrize(("text", "pattern"), [
    ("epochs: 3\nepochs: 4\n", r"epochs is given twice \(line 2\)"),
    ("finetune-epochs: 1\nfinetune_epochs: 2\n", r"finetune_epochs is given twice"),
    ("run_name: yes\n", r"run_name: expected text, got yes \(YAML reads it as true/false\)"),
    ("experiment: off\n", r"quote it \(\"off\"\)"),
    ("run_name:\n", r"got nothing \(YAML reads it as null\)"),
    ("resume: on\n", r"resume: expected true or false, got \"on\"; YAML 1.1 and 1.2"),
    ("epochs: 010\n", r"a leading zero reads as octal in YAML 1.1"),
    ("epochs: 1_000\n", r"write it in decimal digits"),
    ("epochs: 1:30\n", r"write it in decimal digits"),
    ('epochs: "3"\n', r"got the text \"3\"; write it without quotes"),
    ("a: &x 3\nepochs: *x\n", r"line 1: YAML anchors and aliases"),
    ("epochs: 3\n---\nepochs: 4\n", r"more than one YAML document \(line 2\)"),
    ("epochs: !!int 3\n", r"YAML tags \(tag:yaml.org,2002:int\) are not read"),
    ("epochs: !!python/object:os.system x\n", r"YAML tags"),
    ("? [a]\n: 3\n", r"a key must be a parameter name"),
    ('{"model": "\\ud83d"}', r"half a character"),
])
def test_ambiguous_values_are_refused_in_one_line(tmp_path: Path, text: str,
                                                  pattern: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=rf"^--params-file {path}: .*{pattern}") as caught:
        read_params_file(str(path))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00", b"epochs: 3\x00\n",
                                     b"\xff\xfe\x00e"])
def test_binary_content_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"(not UTF-8 text|NUL byte).*YAML or JSON text"):
        read_params_file(str(path))


def test_a_folder_or_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"is a folder, not a file"):
        read_params_file(str(tmp_path))
    if os.path.exists("/dev/zero"):
        with pytest.raises(InputError, match=r"/dev/zero: is a device"):
            read_params_file("/dev/zero")
