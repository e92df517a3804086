"""build-images without building: tags, staged context, certificates, index args, errors."""

import os
import subprocess

import pytest

from tbpipe.components import _image
from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.pipelines.runners import build_context, images
from tests.helpers import TBPIPE


def test_tags_are_the_ones_the_component_specs_use():
    specs = {s.variant: s for s in images.image_specs(["cpu", "gpu", "tensorboard", "cpu"])}
    assert list(specs) == ["cpu", "gpu", "tensorboard"]
    assert specs["cpu"].tag == _image.IMAGE and specs["gpu"].tag == _image.GPU_IMAGE
    assert (specs["cpu"].target, specs["gpu"].target) == ("cpu", "gpu")
    assert specs["tensorboard"].dockerfile == "docker/tensorboard.Dockerfile"
    assert specs["tensorboard"].target is None
    moved = images.image_specs(["cpu"], registry="eu.gcr.io/proj/")[0]
    assert moved.tag == _image.image("cpu", "eu.gcr.io/proj")
    assert moved.tag.startswith("eu.gcr.io/proj/tbpipe:")


def test_unknown_variant_and_push_without_registry_are_input_errors():
    with pytest.raises(InputError, match="--variant 'arm'"):
        images.image_specs(["arm"])
    with pytest.raises(InputError, match="--push needs --registry"):
        images.build_images(["cpu"], push=True)


def test_extra_ca_certs_must_exist_and_be_pem(tmp_path):
    bad = tmp_path / "key.txt"
    bad.write_text("not a certificate\n")
    with pytest.raises(InputError, match="not a PEM certificate"):
        build_context.read_certificates([str(bad)])
    with pytest.raises(InputError, match="missing.crt"):
        build_context.read_certificates([str(tmp_path / "missing.crt")])


def test_staged_context_holds_the_project_constraints_and_certs_only(tmp_path):
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    context = build_context.stage_context(tmp_path / "ctx", [pem])
    names = {p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()}
    assert {"pyproject.toml", "docker/Dockerfile", "docker/tensorboard.Dockerfile",
            "docker/constraints.txt", "docker/requirements.py",
            "components/_image.py", "pipelines/cli/main.py"} <= names
    assert (context / "docker/ca-certificates/tbpipe-extra-0.crt").read_bytes() == pem
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert not any(n.startswith((".venv", ".git/", "tests/", "tbpipe-runs")) for n in names)


def test_constraints_pin_every_requirement_of_the_project():
    pins = {}
    for line in (build_context.DOCKER_DIR / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"unpinned line in constraints.txt: {line}"
            pins[name] = version
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    for line in metadata.requires("tbpipe"):
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": "gpu"}):
            continue  # dev tools are not in the images
        name = canonicalize_name(req.name)
        assert name in pins, req.name
        assert pins[name] in req.specifier, (req, pins[name])
    assert any(name.startswith("nvidia-cudnn") for name in pins), "gpu pins missing"


def test_pip_index_args_pass_reachable_indexes_only(monkeypatch, capsys):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL",
                       "https://user:token@private.example/simple file:///opt/wheels")
    args = build_context.pip_index_args()
    assert args["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert "token" not in " ".join(args.values()) and "file://" not in " ".join(args.values())
    out = capsys.readouterr().out
    assert "private.example" in out and "credentials" in out and "token" not in out
    assert "file:///opt/wheels" in out


def test_no_engine_is_one_clear_line(tmp_path):
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"}
    proc = subprocess.run([*TBPIPE, "build-images",
                           "--variant", "cpu"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tbpipe: error: "), proc.stderr
    assert "docker" in lines[0] and ("not running" in lines[0] or "not installed" in lines[0])


def test_no_docker_cli_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    with pytest.raises(TbpipeError, match="docker is not installed"):
        images.docker_command()


def test_human_size():
    assert images.human_size(999) == "999 B"
    assert images.human_size(1_234_000) == "1.23 MB"
    assert images.human_size(2_940_000_000) == "2.94 GB"
