"""kfp's private names in one module (pipelines/kfp_compat.py), version-checked, with fallbacks."""

import ast
import signal
import socket
import time
from pathlib import Path

import pytest
from kfp import dsl
from packaging.specifiers import SpecifierSet

from tbpipe.pipelines import kfp_compat
from tbpipe.pipelines.cli.main import main
from tbpipe.pipelines.training import compile_pipeline
from tests.kfp_standin import KfpStandIn
from tests.unit.test_run_output import RUN, show

REPO = Path(__file__).resolve().parents[2]
HOME = REPO / "pipelines" / "kfp_compat.py"
#: kfp's (and kfp_server_api's) names that are not its public API, as tbpipe has used them:
#: kfp.Client's private service APIs and the health check it retries, the REST client inside
#: them, a loop variable's type, kfp.local's subprocess runner and the executor's entry point.
PRIVATE_NAMES = {
    "_healthz_api", "_run_api", "_experiment_api", "_pipelines_api", "_upload_api",
    "_recurring_run_api", "get_kfp_healthz", "rest_client", "pool_manager",
    "connection_pool_kw", "channel_type", "_get_first_element_type", "subprocess_task_handler",
    "run_local_subprocess", "executor_main", "TypeCheckManager",
}
#: kfp.local's log wording (string constants).
PRIVATE_WORDING = ("Executing task", "finished with status", "_KFP_RUNTIME")


def private_uses(source: str) -> list[str]:
    """Where ``source`` names a kfp private attribute: ``line: name``.

    A name of :data:`PRIVATE_NAMES` as an identifier, attribute or import; kfp.local's log
    wording in a string that is not a docstring; any ``_private`` attribute of a name bound
    by ``import kfp...`` / ``from kfp... import``, and any ``_private`` name imported from kfp.
    """
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    from_kfp, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("kfp", "kfp_server_api"):
                    from_kfp.add(alias.asname or alias.name.split(".")[0])
                    found += [f"{node.lineno}: {part}" for part in alias.name.split(".")
                              if part in PRIVATE_NAMES or part.startswith("_")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "kfp", "kfp_server_api"):
            found += [f"{node.lineno}: {part}" for part in node.module.split(".")
                      if part in PRIVATE_NAMES or part.startswith("_")]
            for alias in node.names:
                from_kfp.add(alias.asname or alias.name)
                if alias.name in PRIVATE_NAMES or alias.name.startswith("_"):
                    found.append(f"{node.lineno}: {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            if node.attr in PRIVATE_NAMES or (
                    private and isinstance(root, ast.Name) and root.id in from_kfp):
                found.append(f"{node.lineno}: {node.attr}")
        elif isinstance(node, (ast.Name, ast.FunctionDef)):
            name = node.id if isinstance(node, ast.Name) else node.name
            if name in PRIVATE_NAMES:
                found.append(f"{node.lineno}: {name}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            found += [f"{node.lineno}: {words!r}" for words in PRIVATE_WORDING
                      if words in node.value] + [
                f"{node.lineno}: {name!r}" for name in PRIVATE_NAMES
                if name.startswith("_") and name in node.value]
    return found


def test_no_module_but_kfp_compat_names_a_kfp_private_attribute():
    offenders = {}
    for folder in ("components", "pipelines", "benchmarks", "scripts"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == HOME:
                continue
            uses = private_uses(path.read_text(encoding="utf-8"))
            if uses:
                offenders[str(path.relative_to(REPO))] = uses
    assert offenders == {}
    assert private_uses(HOME.read_text(encoding="utf-8"))  # it is where they are


@pytest.mark.parametrize("source, expected", [
    ("import kfp\nkfp.Client()._healthz_api.x()\n", ["2: _healthz_api"]),
    ("from kfp.local import subprocess_task_handler as h\n",
     ["1: subprocess_task_handler"]),
    ("from kfp.dsl import for_loop\nfor_loop._make_name('x')\n", ["2: _make_name"]),
    ("def f(item):\n    item.x.channel_type = 'String'\n", ["2: channel_type"]),
    ("import re\nre.compile(r\"Executing task '([^']+)'\")\n", ["2: 'Executing task'"]),
    ("def f():\n    \"\"\"Reads kfp.local's 'Executing task' lines.\"\"\"\n", []),
    ("import os\nos._exit(0)\n", []),
])
def test_the_check_finds_what_it_should(source, expected):
    assert private_uses(source) == expected


@pytest.mark.parametrize("version, checked", [
    ("2.14.0", True), ("2.17.3", True), ("2.17.3.post1", True), ("2.17", True),
    ("2.13.9", False), ("2.18.0", False), ("2.18.0rc1", False), ("3.0", False),
    ("2.170.0", False),  # a string prefix check ("2.17") would take it
    ("not-a-version", False), ("", False)])
def test_versions_are_compared_parsed(version, checked):
    assert kfp_compat.kfp_checked(version) is checked


@pytest.fixture
def unchecked_kfp(monkeypatch):
    """The installed kfp, treated as a release kfp_compat was not checked with."""
    monkeypatch.setattr(kfp_compat, "CHECKED_KFP", SpecifierSet(">=99"))
    assert not kfp_compat.kfp_checked()


def test_the_installed_kfp_is_checked():
    assert kfp_compat.kfp_checked(), kfp_compat.kfp_version()


def test_an_unchecked_kfp_reads_no_local_log_lines_and_the_display_follows_markers(
        unchecked_kfp):
    assert kfp_compat.local_task_event("12:00 - INFO - Executing task 'train'") is None
    display, screen, log = show(RUN)
    assert not display.reads_local_log
    lines = screen.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["train", "started"], ["train", "epoch"], ["train", "epoch"], ["✓", "train"],
        ["evaluate-finetuned", "started"], ["✓", "evaluate-finetuned"]], screen
    assert lines[3].endswith("s  val_accuracy 0.8125")
    assert log == RUN


def test_a_checked_kfp_reads_its_log_wording():
    assert kfp_compat.local_task_event("12:00 - INFO - Executing task 'train'") == \
        ("started", "train")
    assert kfp_compat.local_task_event(
        "12:00 - INFO - Task 'train' finished with status SUCCESS") == ("succeeded", "train")
    assert kfp_compat.local_task_event("12:00 - INFO - Task 'train' outputs:") is None


def test_an_unchecked_kfp_leaves_the_local_runner_alone(unchecked_kfp):
    assert kfp_compat.local_subprocess() is None


@dsl.component(base_image="python:3.11")
def takes_a_float(lr: float) -> float:
    """Return ``lr``."""
    return lr


def loop_field_type() -> str:
    """The type loop_field gives a float field of a loop over dicts whose first value is a str."""
    seen = {}

    @dsl.pipeline(name="loop")
    def loop():
        with dsl.ParallelFor([{"trial": "t-1", "lr": 0.1}]) as item:
            field = kfp_compat.loop_field(item, "lr")
            seen["lr"] = field.channel_type
            if field.channel_type == "String":
                takes_a_float(lr=field)
            else:  # kfp refuses the str-typed field for a float
                with pytest.raises(Exception, match="incompatible"):
                    takes_a_float(lr=field)
                takes_a_float(lr=0.1)

    return seen["lr"]


def test_an_unchecked_kfp_types_loop_fields_as_kfp_does(unchecked_kfp):
    assert loop_field_type() == "str"  # the first value's type: kfp's own, unchanged


def test_a_checked_kfp_marks_loop_fields_string():
    assert loop_field_type() == "String"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return compile_pipeline(str(tmp_path_factory.mktemp("pkg") / "pipeline.yaml"))


def test_an_unchecked_kfp_still_submits(unchecked_kfp, package, capsys, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    with KfpStandIn() as server:
        rc = main(["submit", "--endpoint", server.url, "--package", package,
                   "--log-root", "gs://bucket/logs"])
        assert rc == 0, capsys.readouterr().err
        assert len(server.runs) == 1


def test_an_unchecked_kfp_still_bounds_a_silent_server(unchecked_kfp, package, capsys,
                                                         monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        rc = main(["submit", "--endpoint", url, "--package", package, "--request-timeout",
                   "0.5", "--log-root", "gs://bucket/logs"])
        elapsed = time.monotonic() - start
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "did not answer within 0.5s" in err[0], err
    assert elapsed < 10  # the deadline: (retries + 1) x 0.5 s, not forever
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the timer is off again
