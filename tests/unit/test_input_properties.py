"""Property-based tests (Hypothesis) of what reads user input: names, params files, run
summaries, CSV tables and image files (issue 23). Whatever the input, the reader answers
with a value it can stand behind or one ``InputError`` line, never another exception.

Kept fast: a few dozen examples each. No deadline per example: on a loaded machine the
first example (imports) takes seconds, and a hang is caught by the readers' own bounds
(tests/reliability/test_input_bounds.py), not by timing.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tbpipe.components.common.errors import InputError
from tbpipe.components.common.naming import validate_name

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


# ---- names ------------------------------------------------------------------------------

@FAST
@given(st.one_of(TEXT, st.text("aZ9._-/\n", max_size=132)))
def test_a_name_is_accepted_only_whole(value: str) -> None:
    rule = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value) and ".." not in value
    try:
        assert validate_name("run", value) == value
        assert rule, value
        assert "/" not in value and "\n" not in value and len(value) <= 128
    except InputError as exc:
        assert not rule, value
        assert "\n" not in str(exc) and len(str(exc)) < 300


# ---- params files ------------------------------------------------------------------------

def _read_params(text: str | bytes) -> dict:
    from tbpipe.pipelines.cli.params_file import read_params_file

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "p.yaml")
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return read_params_file(str(path))


@FAST
@given(st.one_of(st.binary(max_size=200), TEXT,
                 st.lists(st.sampled_from(["epochs: ", "run_name: ", "resume: ", "&a ",
                                           "*a", "yes", "1e-3", "0123", "[1, 2]", "\n",
                                           "---\n", "!!str ", "'x'", "{", "}", ": ", "- ",
                                           "learning_rate: ", "1_0", ".inf", "#"]),
                          max_size=12).map("".join)))
def test_any_params_file_gives_typed_values_or_one_line(text: str | bytes) -> None:
    try:
        values = _read_params(text)
    except InputError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
        return
    for value in values.values():
        assert isinstance(value, bool | int | float | str)


def _params_strategy() -> st.SearchStrategy[dict]:

    from tbpipe.components.registry import param_table

    kinds = {name: param.type for name, param in param_table().items() if param.flag}
    values = {bool: st.booleans(), int: st.integers(-10**12, 10**12),
              float: st.floats(allow_nan=False, allow_infinity=False, width=64), str: TEXT}
    return st.fixed_dictionaries({}, optional={name: values[kind] for name, kind in
                                               kinds.items()})


@FAST
@given(_params_strategy(), st.sampled_from(["json", "yaml"]))
def test_params_written_by_json_or_yaml_read_back_as_written(params: dict, form: str) -> None:
    import yaml

    text = json.dumps(params) if form == "json" else yaml.safe_dump(params)
    assert _read_params(text) == params


# ---- run summaries -----------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | TEXT
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)
FIELDS = ("started", "finished", "test_accuracy", "finetuned", "promotion", "steps",
          "tensorboard_url", "experiment", "run", "model_uri", "final_model")


@FAST
@given(st.one_of(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), JSON,
                 st.binary(max_size=50)))
def test_runs_lists_any_summary_without_crashing(summary: object) -> None:
    from tbpipe.components.common.run_summary import list_runs
    from tbpipe.pipelines.cli.runs import format_table, table_row

    with tempfile.TemporaryDirectory() as root:
        folder = Path(root, "exp", "r1")
        folder.mkdir(parents=True)
        data = summary if isinstance(summary, bytes) else json.dumps(summary).encode()
        (folder / "_summary.json").write_bytes(data)
        (row,) = list_runs(root)
    assert (row["experiment"], row["run"]) == ("exp", "r1")  # the folder names the run
    cells = table_row(row)
    assert all(isinstance(cell, str) and cell.isprintable() for cell in cells), cells
    format_table([cells])


# ---- CSV tables ---------------------------------------------------------------------------

CELL = st.sampled_from(["0", "1", "2", "255", "256", "-1", "0.5", "nan", "", "x", "1e3",
                        "3.5", '"7"', "inf"])


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(["label", "pixel0", "pixel1", "pixel2", "pixel3", "x",
                                 "pixel01", ""]), min_size=1, max_size=6),
       st.lists(st.lists(CELL, min_size=1, max_size=6), max_size=30))
def test_any_csv_table_preprocesses_or_fails_in_one_line(header: list[str],
                                                        rows: list[list[str]]) -> None:
    from tbpipe.components.preprocessing.config import PreprocessConfig
    from tbpipe.components.preprocessing.core import preprocess_data

    text = ",".join(header) + "\n" + "".join(",".join(row) + "\n" for row in rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "t.csv")
        path.write_text(text)
        out = Path(folder, "out")
        try:
            result = preprocess_data(str(path), str(out / "train"), str(out / "val"),
                                     str(out / "test"), None,
                                     PreprocessConfig(val_fraction=0.2, test_fraction=0.2,
                                                      chunk_rows=7))
        except InputError as exc:
            assert "\n" not in str(exc)
            assert not out.exists() or not any(out.iterdir())  # nothing half-written
            return
    splits = (result.train, result.val, result.test)
    counts = [sum(info.class_counts[k] for info in splits) for k in range(result.num_classes)]
    assert all(counts), counts  # no class is an output never trained


# ---- image files ---------------------------------------------------------------------------

MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


@FAST
@given(st.sampled_from(MODES), st.sampled_from(["PNG", "TIFF", "GIF", "JPEG", "BMP", "WEBP"]),
       st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3]),
       st.integers(0, 3), st.binary(max_size=40))
def test_any_image_file_decodes_to_bytes_or_is_skipped_with_a_reason(
        mode: str, fmt: str, width: int, height: int, channels: int, cut: int,
        noise: bytes) -> None:
    import numpy as np
    from PIL import Image

    from tbpipe.components.common.image_files import (
        TOO_LARGE,
        UNKNOWN_RANGE,
        UNREADABLE,
        decode_image,
    )

    image = Image.new(mode, (width, height))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # Pillow cannot write this mode in this format: nothing to read
    data = buffer.getvalue()
    if cut:  # damage it: truncated, or noise in the middle
        data = data[:len(data) * cut // 4] + noise
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "x." + fmt.lower())
        path.write_bytes(data)
        pixels, notes = decode_image(str(path), 4, 5, channels)
    if pixels is None:
        assert len(notes) == 1 and notes[0] in (UNREADABLE, TOO_LARGE, UNKNOWN_RANGE)
    else:
        assert pixels.shape == (4, 5, channels) and pixels.dtype == np.uint8
        assert all(note.startswith("converted_") for note in notes)
