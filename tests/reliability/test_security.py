"""Security: no secret in compiled specs, logs or TensorBoard hparams; names cannot escape the
log root; images run as a non-root user; the TensorBoard deployment is locked down.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from tbpipe.components import evaluate, finetune, preprocess, train
from tbpipe.pipelines.cli.main import main
from tests.helpers import write_dataset
from tests.kfp_standin import KfpStandIn
from tests.reliability.support import REPO, cli, one_error_line

SECRETS = {
    "GOOGLE_APPLICATION_CREDENTIALS": "/var/run/secrets/sa-key-4f1c9e7d.json",
    "GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.fake-oauth-token-8c2b",
    "KFP_TOKEN": "kfp-bearer-fake-5d3a",
    "AWS_SECRET_ACCESS_KEY": "aws-fake-secret-77e1",
}


def leaks(text: str) -> list[str]:
    """The secret values (and credential file paths) found in ``text``."""
    return [value for value in SECRETS.values() if value in text]


def files_text(root: Path) -> str:
    """Every file under ``root`` as text (bytes decoded leniently: event files included)."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())


def test_compiled_spec_holds_no_secret_from_the_environment(tmp_path):
    proc = cli("compile", "--package", str(tmp_path / "p.yaml"), env=SECRETS)
    assert proc.returncode == 0, proc.stderr
    spec = (tmp_path / "p.yaml").read_text()
    assert leaks(spec + proc.stdout + proc.stderr) == []
    assert not re.search(r"GOOGLE_APPLICATION_CREDENTIALS|ACCESS_TOKEN|KFP_TOKEN|SECRET", spec)
    assert "tbpipe-training" in spec  # it is the pipeline spec that was searched


def test_submit_sends_the_token_only_as_a_header(tmp_path, capsys, monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KFP_HOST", raising=False)
    with KfpStandIn() as kfp:
        rc = main(["submit", "--endpoint", kfp.url, "--experiment", "exp", "--run-name", "r1",
                   "--log-root", "gs://bucket/logs", "--no-gpu"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert set(kfp.authorizations) == {f"Bearer {SECRETS['KFP_TOKEN']}"}
    stored = json.dumps([kfp.specs, kfp.runs, kfp.pipelines, kfp.versions], default=str)
    assert leaks(stored + out + err) == []


def read_hparams(log_dir: Path) -> dict[str, object]:
    """The HParams plugin's session values in one run folder, read back from its events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    acc.Reload()
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(acc.SummaryMetadata("_hparams_/session_start_info")
                         .plugin_data.content)
    return {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for key, value in data.session_start_info.hparams.items()}


def test_training_logs_and_hparams_hold_no_secret(tmp_path, capfd, monkeypatch):
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    for split, seed in (("train", 0), ("val", 1)):
        write_dataset(str(tmp_path / "in" / split), n=16, seed=seed)
    train.python_func(train_data=Dataset(uri=str(tmp_path / "in" / "train")),
                      val_data=Dataset(uri=str(tmp_path / "in" / "val")),
                      model=Model(uri=str(tmp_path / "model")),
                      metrics=Metrics(uri=str(tmp_path / "metrics")),
                      log_root=str(tmp_path / "logs"), experiment="exp", run_name="r1",
                      job_name="job", epochs=1, batch_size=8)
    captured = capfd.readouterr()
    hparams = read_hparams(tmp_path / "logs" / "exp" / "r1" / "train")
    assert set(hparams) == {"epochs", "batch_size", "learning_rate", "seed", "params", "precision",
                            "model", "workers", "global_batch_size"}
    assert hparams["epochs"] == 1 and hparams["batch_size"] == 8
    everything = files_text(tmp_path / "logs") + files_text(tmp_path / "model")
    assert leaks(everything + captured.out + captured.err + json.dumps(hparams)) == []


# ---- names that end up in paths ---------------------------------------------------------------

BAD_NAMES = {
    "experiment-dotdot": ({"experiment": "../evil"}, r"experiment name '\.\./evil'"),
    "experiment-absolute": ({"experiment": "/tmp/tbpipe-evil"}, r"experiment name '/tmp/"),
    "run-dotdot": ({"run_name": ".."}, r"run name '\.\.'"),
    "run-nested-dotdot": ({"run_name": "a/../../evil"}, r"run name 'a/\.\./\.\./evil'"),
    "job-name-dotdot": ({"run_name": "", "job_name": "../evil"}, r"run name '\.\./evil'"),
    "step-name-dotdot": ({"step_name": "../evil"}, r"step name '\.\./evil'"),
}
ADVICE = r"is not allowed: use 1-128 letters, digits, .* \(no '/', no '\.\.'\)"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inputs")
    for split, seed in (("train", 0), ("val", 1)):
        write_dataset(str(root / split), n=16, seed=seed)
    return root


def call_step(step: str, names: dict, inputs: Path, out: Path) -> None:
    where = {"experiment": "exp", "run_name": "r1", "job_name": "job", **names}
    log_root = str(out / "logs")
    data = {"train_data": Dataset(uri=str(inputs / "train")),
            "val_data": Dataset(uri=str(inputs / "val"))}
    if step == "preprocess":
        outs = {f"{s}_data": Dataset(uri=str(out / s)) for s in ("train", "val", "test")}
        preprocess.python_func(data="builtin:digits", **outs, stats=Metrics(uri=str(out / "s")),
                               log_root=log_root, **where)
    elif step == "evaluate":
        evaluate.python_func(model=Model(uri=str(inputs / "none")), test_data=data["val_data"],
                             metrics=Metrics(uri=str(out / "m")),
                             classification_metrics=ClassificationMetrics(uri=str(out / "c")),
                             report=Markdown(uri=str(out / "report")),
                             html_report=HTML(uri=str(out / "report.html")), log_root=log_root,
                             **where)
    elif step == "train":
        train.python_func(**data, model=Model(uri=str(out / "model")),
                          metrics=Metrics(uri=str(out / "m")), log_root=log_root, **where)
    else:
        finetune.python_func(model=Model(uri=str(inputs / "none")), **data,
                             finetuned_model=Model(uri=str(out / "model")),
                             metrics=Metrics(uri=str(out / "m")), log_root=log_root, **where)


@pytest.mark.parametrize(("case", "step"), [
    (case, step) for case in sorted(BAD_NAMES) for step in ("preprocess", "train", "evaluate",
                                                            "finetune")
    if case != "step-name-dotdot" or step in ("preprocess", "evaluate")])  # the others' is fixed
def test_components_refuse_names_that_leave_the_log_root(step, case, inputs, tmp_path, capsys):
    names, needle = BAD_NAMES[case]
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        call_step(step, names, inputs, out)
    assert exit_info.value.code == 1
    label = r"[^:]+" if "step_name" in names else step  # the line is labelled by step_name
    one_error_line(capsys.readouterr().err, rf"^tbpipe: {label}: error: ", needle, ADVICE)
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.rglob("*")) == [
        "deep", "out"]
    assert not Path("/tmp/tbpipe-evil").exists()


CLI_NAMES = {
    "run-experiment-dotdot": (["run", "--experiment", "../evil"], r"experiment name '\.\./evil'"),
    "run-experiment-absolute": (["run", "--experiment", "/tmp/tbpipe-evil"], r"experiment name"),
    "run-run-name-dotdot": (["run", "--run-name", "../../evil"], r"run name '\.\./\.\./evil'"),
    "run-run-name-slash": (["run", "--run-name", "a/b"], r"run name 'a/b'"),
    "run-experiment-empty": (["run", "--experiment", ""], r"experiment name ''"),
    "submit-run-name-dotdot": (["submit", "--run-name", "../evil"], r"run name '\.\./evil'"),
    "submit-experiment-absolute": (["submit", "--experiment", "/etc"],
                                   r"experiment name '/etc'"),
}


@pytest.mark.parametrize("case", sorted(CLI_NAMES))
def test_cli_refuses_names_that_leave_the_log_root(case, tmp_path):
    args, needle = CLI_NAMES[case]
    extra = (["--log-root", str(tmp_path / "logs"), "--pipeline-root", str(tmp_path / "kfp")]
             if args[0] == "run" else
             ["--endpoint", "http://127.0.0.1:9", "--log-root", "gs://bucket/logs"])
    proc = cli(*args, *extra)
    one_error_line(proc, r"^tbpipe: error: ", needle, ADVICE, code=1)
    assert list(tmp_path.iterdir()) == [] and not Path("/tmp/tbpipe-evil").exists()


# ---- images and deployment ----------------------------------------------------------------------

def dockerfile_stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{stage: [(INSTRUCTION, args)]}``, each stage with what it inherits from its parent."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            parts = args.split()
            parent = stages.get(parts[0], [])
            current = list(parent)
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else f"#{len(stages)}"
            stages[name] = current
        current.append((op, args.strip()))
    return stages


IMAGES = [("Dockerfile", "cpu"), ("Dockerfile", "gpu"), ("tensorboard.Dockerfile", "tensorboard")]


@pytest.mark.parametrize(("dockerfile", "stage"), IMAGES)
def test_images_run_as_a_non_root_user_and_hold_no_credentials(dockerfile, stage):
    instructions = dockerfile_stages(REPO / "docker" / dockerfile)[stage]
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:"), users
    created = " ".join(args for op, args in instructions if op == "RUN")
    assert re.search(rf"useradd --uid [1-9]\d* .*\b{re.escape(users[-1])}\b", created)
    for op, args in instructions:
        if op in ("ENV", "ARG"):
            assert not re.search(r"(?i)(CREDENTIAL|TOKEN|SECRET|PASSWORD|API_KEY)\w*=\S",
                                 args), args
        if op in ("COPY", "ADD"):
            assert not re.search(r"(?i)\.json\b|key|secret|credential", args), args


def test_compiled_steps_run_as_the_images_non_root_user(tmp_path):
    from tbpipe.pipelines.placement import CompileOptions
    from tbpipe.pipelines.training import compile_pipeline

    spec, platform = yaml.safe_load_all(Path(compile_pipeline(str(tmp_path / "p.yaml"),
                                                              CompileOptions())).read_text())
    contexts = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for executor in spec["deploymentSpec"]["executors"]:
        context = contexts.get(executor, {}).get("securityContext", {})
        assert context.get("runAsNonRoot") is True, executor
        assert str(context.get("runAsUser")) == "1000", executor  # uid of useradd in docker/


def test_build_context_excludes_everything_not_listed():
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*"  # deny by default: no keys, .env files or runs reach an image
    allowed = [line[1:] for line in lines if line.startswith("!")]
    assert not [a for a in allowed if re.search(r"(?i)secret|credential|key|\.env", a)]


def deploy_documents() -> list[dict]:
    root = REPO / "deploy" / "tensorboard" / "base"
    # The base only: an overlay may add what the base must not have (an IAP Ingress).
    files = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml")) if root.exists() else []
    if not files:
        pytest.skip("deploy/tensorboard/ has no manifests yet (issue 3 writes them)")
    return [doc for path in files for doc in yaml.safe_load_all(path.read_text())
            if isinstance(doc, dict) and "kind" in doc]


def test_tensorboard_deployment_is_non_root_read_only_and_cluster_internal():
    docs = deploy_documents()
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, container["name"]
            assert context.get("readOnlyRootFilesystem") is True, container["name"]
            assert context.get("allowPrivilegeEscalation") is False, container["name"]
            assert not context.get("privileged"), container["name"]
    for service in (d for d in docs if d["kind"] == "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert not [d for d in docs if d["kind"] in ("Secret", "Ingress")]
    for doc in docs:
        assert leaks(yaml.safe_dump(doc)) == []


def test_tensorboard_docs_say_how_to_add_authentication():
    deploy_documents()  # skips while there are no manifests
    docs = [*(REPO / "deploy").rglob("*.md"), REPO / "docs" / "cluster.md", REPO / "README.md"]
    texts = [p.read_text() for p in docs if p.exists()]
    assert any(re.search(r"\bIAP\b|Identity-Aware Proxy", t) for t in texts)
    readme = (REPO / "deploy" / "tensorboard" / "README.md").read_text()
    assert "roles/storage.objectViewer" in readme  # read-only on the bucket
    assert not re.search(r"roles/storage\.(objectAdmin|objectCreator|objectUser|admin)", readme)
