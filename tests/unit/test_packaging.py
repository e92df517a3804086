"""The install: the ``tbpipe`` namespace, no top-level ``components``/``pipelines``, extras."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_installed_under_tbpipe():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    dirs = config["package-dir"]
    found = set()
    for package, folder in dirs.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *rel.parts]))
    assert found == listed
    assert all(name.startswith("tbpipe.") for name in listed)


def test_version_flag():
    from tbpipe.components._image import package_version

    out = subprocess.run([sys.executable, "-m", "tbpipe.pipelines.cli", "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"tbpipe {package_version()}"


def test_public_api_names_are_the_components_and_pipeline_builders():
    from kfp.dsl.python_component import PythonComponent

    import tbpipe.components as components
    import tbpipe.pipelines as pipelines

    for name in ("preprocess", "train", "evaluate", "finetune"):
        assert isinstance(getattr(components, name), PythonComponent)
    assert callable(pipelines.build_training_pipeline) and callable(pipelines.place_task)


@pytest.mark.slow
def test_plain_install_compiles_without_tensorflow(tmp_path):
    """``pip install .`` (no extras) in a fresh venv: the public API and ``tbpipe compile``
    work from another folder, TensorFlow is not installed and ``import components`` fails."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", str(REPO)],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(*argv):
        return subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    api = run(python, "-c", "from tbpipe.components import preprocess, train, evaluate, "
              "finetune; from tbpipe.pipelines import build_training_pipeline, place_task")
    assert api.returncode == 0, api.stderr[-2000:]
    compiled = run(str(venv / "bin" / "tbpipe"), "compile", "--package", "p.yaml")
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    text = (elsewhere / "p.yaml").read_text()
    assert "from tbpipe.components" in text and "from components." not in text
    assert str(tmp_path) not in text  # no path of the compiling machine
    for absent in ("tensorflow", "tensorboardX", "components", "pipelines"):
        probe = run(python, "-c", f"import {absent}")
        assert probe.returncode != 0, f"{absent} is importable after a plain install"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    top = {p.name for p in Path(site.stdout.strip()).iterdir()}
    assert "tbpipe" in top and not {"components", "pipelines"} & top
