"""--notify: the message, its webhook and SMTP delivery, dead targets, a local run's end.

A local HTTP receiver (http.server in a thread) and a local SMTP server (aiosmtpd) receive
the messages; local runs use a one-step stand-in pipeline (as tests/reliability does), so
they exercise ``tbpipe run``'s end-of-run path without TensorFlow.
"""

import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from kfp import dsl
from kfp.dsl import Model, Output

from tbpipe.components.common.errors import InputError, SettingError, TbpipeError
from tbpipe.components.notification import core
from tbpipe.components.notification.config import NotifyConfig, parse_target
from tbpipe.components.notification.core import RunOutcome, send_notifications


class Receiver:
    """A local webhook: keeps every JSON body POSTed to it; ``hang`` never answers."""

    def __init__(self, hang: bool = False, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.paths.append(self.path)
                if hang:
                    time.sleep(3)
                    return
                receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Keep(Message):
        def __init__(self) -> None:
            super().__init__()
            self.mails = []

        def handle_message(self, message) -> None:  # noqa: ANN001
            self.mails.append(message)

    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SUCCESS = RunOutcome("SUCCEEDED", "nightly/r1", test_accuracy=0.9312, final_model="finetuned",
                     gate="promoted: accuracy 0.9312 vs baseline 0.9100",
                     tensorboard_url="http://tb.example/#scalars&regexInput=nightly%2Fr1")


def test_a_webhook_gets_slack_text_and_the_fields(receiver):
    warnings = []
    assert send_notifications((parse_target(receiver.url()),), SUCCESS, environ={},
                              warn=warnings.append) == 1
    (body,) = receiver.bodies
    assert body["text"].splitlines()[0] == "tbpipe run nightly/r1 succeeded"
    assert "test accuracy: 0.9312 (finetuned model)" in body["text"]
    assert "gate: promoted: accuracy 0.9312" in body["text"]
    assert "TensorBoard: http://tb.example/#scalars&regexInput=nightly%2Fr1" in body["text"]
    assert body["state"] == "SUCCEEDED" and body["test_accuracy"] == 0.9312
    assert warnings == []


def test_mail_goes_through_the_smtp_server_the_environment_names(smtp_server):
    controller, handler = smtp_server
    failed = RunOutcome("FAILED", "nightly/r2", failed_step="preprocess",
                        error="data.csv: no label column")
    environ = {"TBPIPE_SMTP_HOST": "127.0.0.1", "TBPIPE_SMTP_PORT": str(controller.port),
               "TBPIPE_SMTP_FROM": "ci@example.com"}
    assert send_notifications((parse_target("mailto:team@example.com"),), failed,
                              environ=environ) == 1
    (mail,) = handler.mails
    assert mail["To"] == "team@example.com" and mail["From"] == "ci@example.com"
    assert mail["Subject"] == "tbpipe run nightly/r2 FAILED"
    assert "failed step: preprocess" in mail.get_payload()
    assert "error: data.csv: no label column" in mail.get_payload()


def test_dead_and_hanging_targets_are_one_warning_each_and_bounded():
    hanging = Receiver(hang=True)
    refused = Receiver(status=500)
    try:
        targets = (parse_target(f"http://127.0.0.1:{free_port()}/dead/TOKEN123"),
                   parse_target(hanging.url("/slow/TOKEN123")),
                   parse_target(refused.url("/err/TOKEN123")),
                   parse_target("mailto:a@example.com"),  # no TBPIPE_SMTP_HOST
                   parse_target("env:TBPIPE_WEBHOOK_URL"))  # not set
        warnings = []
        start = time.monotonic()
        assert send_notifications(targets, SUCCESS, environ={}, warn=warnings.append,
                                  timeout_s=0.3) == 0
        took = time.monotonic() - start
    finally:
        hanging.close()
        refused.close()
    assert len(warnings) == 5 and all(w.startswith("tbpipe: warning: notify ") for w in warnings)
    assert not any("TOKEN123" in w for w in warnings)  # a webhook's path is its key
    assert ("timed out" in warnings[1] or "no answer within 0.3s" in warnings[1])
    assert "HTTP 500" in warnings[2]
    assert "TBPIPE_SMTP_HOST" in warnings[3] and "$TBPIPE_WEBHOOK_URL is not set" in warnings[4]
    assert len(refused.paths) == 2  # a 5xx is tried again; TRIES bounds it
    assert took < 8, took  # 2 tries x 0.3 s for each, not a hang


def test_env_targets_read_the_url_there_and_secrets_never_show(receiver):
    secret_url = receiver.url("/services/T000/SECRET-HOOK-TOKEN")
    environ = {"TEAM_HOOK": secret_url, "TBPIPE_SMTP_PASSWORD": "pw-very-secret"}
    leaky = RunOutcome("FAILED", "e/r", failed_step="train",
                       error="login pw-very-secret refused at " + secret_url)
    assert send_notifications((parse_target("env:TEAM_HOOK"),), leaky, environ=environ) == 1
    assert receiver.paths == ["/services/T000/SECRET-HOOK-TOKEN"]
    sent = json.dumps(receiver.bodies)
    assert "pw-very-secret" not in sent and "SECRET-HOOK-TOKEN" not in sent
    assert "login [secret] refused at [secret]" in receiver.bodies[0]["text"]


def test_a_bad_target_is_one_line_naming_the_flag():
    from tbpipe.pipelines.training import PipelineParams

    with pytest.raises(SettingError, match=r"^--notify='ftp://...': use an http\(s\)://"):
        PipelineParams(notify="ftp://x/y").validate()
    with pytest.raises(SettingError, match="mailto: needs an address"):
        NotifyConfig("mailto:nobody")
    assert [t.kind for t in NotifyConfig("https://h/x mailto:a@b.io env:V https://h/x").targets] \
        == ["webhook", "mailto", "env"]


def test_notify_is_a_repeatable_flag_of_run_and_submit():
    from tbpipe.pipelines.cli.flags import params_from_args
    from tbpipe.pipelines.cli.main import build_parser

    args = build_parser().parse_args(["run", "--notify", "mailto:a@b.io", "--notify",
                                      "env:HOOK"])
    assert params_from_args(args).notify == "mailto:a@b.io env:HOOK"


# ---- tbpipe run's end ---------------------------------------------------------------------

@dsl.component(base_image="python:3.11")
def standin_step(fail: bool, model: Output[Model], log_root: str = "",
                 experiment: str = "default", run_name: str = "",
                 tensorboard_url: str = "") -> str:
    """Fails like a tbpipe step (one error line), or writes a run summary like select-model."""
    import json
    import os

    from tbpipe.components.common.errors import InputError, exit_on_error
    from tbpipe.components.common.run_summary import write_run_summary

    if fail:
        with exit_on_error("preprocess"):
            raise InputError("data.csv: no label column; name one with --label-column")
    os.makedirs(model.path, exist_ok=True)
    summary = {"final_model": "trained", "final_accuracy": 0.875, "model_uri": model.uri,
               "accuracy": {"trained": 0.875}}
    write_run_summary(log_root, experiment, run_name, summary, tensorboard_url)
    return json.dumps(summary)


@dsl.pipeline(name="notify-standin")
def standin_pipeline(fail: bool, log_root: str, experiment: str, run_name: str,
                     tensorboard_url: str) -> str:
    """One stand-in step."""
    return standin_step(fail=fail, log_root=log_root, experiment=experiment, run_name=run_name,
                        tensorboard_url=tensorboard_url).outputs["Output"]


class StandInPipeline:
    """Stands in for tbpipe's pipeline in ``run_pipeline``: one step that fails or not."""

    pipeline_spec = standin_pipeline.pipeline_spec

    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def __call__(self, **params: object):  # noqa: ANN204
        return standin_pipeline(fail=self.fail, log_root=params["log_root"],
                                experiment=params["experiment"], run_name=params["run_name"],
                                tensorboard_url=params["tensorboard_url"])


def local_run(tmp_path, monkeypatch, fail: bool, notify: str, run_name: str):  # noqa: ANN001, ANN201
    from tbpipe.pipelines import training
    from tbpipe.pipelines.runners.local import run_pipeline
    from tbpipe.pipelines.training import PipelineParams

    monkeypatch.setattr(training, "build_training_pipeline",
                        lambda *a, **k: StandInPipeline(fail))
    params = PipelineParams(run_name=run_name, log_root=str(tmp_path / "logs"), notify=notify,
                            tensorboard_url="http://tb.example:6006")
    return run_pipeline(params, pipeline_root=str(tmp_path / "kfp"), verbose=False,
                        screen=io.StringIO(), warm_worker=False)


def test_a_local_run_that_fails_posts_the_step_and_its_error_line(tmp_path, monkeypatch,
                                                                   receiver):
    with pytest.raises(TbpipeError, match="step preprocess failed"):
        local_run(tmp_path, monkeypatch, True, receiver.url(), "broken")
    (body,) = receiver.bodies
    assert body["state"] == "FAILED" and body["failed_step"] == "preprocess"
    assert body["error"] == "data.csv: no label column; name one with --label-column"
    assert "tbpipe run default/broken FAILED" in body["text"]
    assert "TensorBoard: http://tb.example:6006/#scalars&regexInput=default%2Fbroken" \
        in body["text"]


SECRETS = {"TEAM_HOOK": "/services/T0/SECRET-HOOK-TOKEN", "TBPIPE_SMTP_PASSWORD": "pw-secret-42",
           "AWS_SECRET_ACCESS_KEY": "aws-secret-43"}


def leaked(text: str) -> list[str]:
    return [value for value in SECRETS.values() if value in text]


def test_a_local_run_that_succeeds_posts_accuracy_and_the_tensorboard_link_and_no_secret(
        tmp_path, monkeypatch, receiver, capsys):
    """The webhook URL comes from a secret variable; a hanging second hook changes nothing."""
    hook = Receiver(hang=True)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, receiver.url(value) if name == "TEAM_HOOK" else value)
    monkeypatch.setattr(core, "TIMEOUT_S", 0.3)
    try:
        result = local_run(tmp_path, monkeypatch, False, f"env:TEAM_HOOK {hook.url('/slow')}",
                           "fine")
    finally:
        hook.close()
    assert result.summary["final_accuracy"] == 0.875
    assert receiver.paths == [SECRETS["TEAM_HOOK"]]
    (body,) = receiver.bodies
    assert body["state"] == "SUCCEEDED" and body["test_accuracy"] == 0.875
    assert "test accuracy: 0.8750 (trained model)" in body["text"]
    assert body["tensorboard_url"] == \
        "http://tb.example:6006/#scalars&regexInput=default%2Ffine"
    out, err = capsys.readouterr()
    assert err.count("tbpipe: warning: notify http://127.0.0.1:") == 1
    written = [path.read_text(errors="replace") for path in tmp_path.rglob("*")
               if path.is_file()]  # the log root, the pipeline root, the run's log
    assert any("notify" in text for text in written)  # the run's own files are read
    assert leaked(json.dumps(receiver.bodies) + out + err + "".join(written)) == []


def test_a_compiled_pipeline_with_notify_and_secrets_has_an_exit_handler_and_no_secret(
        tmp_path, monkeypatch):
    from tbpipe.pipelines.cli.main import main
    from tbpipe.pipelines.placement import DEFAULT_SECRET_KEYS, CompileOptions
    from tbpipe.pipelines.training import build_training_pipeline

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    package = tmp_path / "p.yaml"
    assert main(["compile", "--package", str(package), "--notify", "env:TEAM_HOOK",
                 "--secret", "tbpipe-creds", "--secret", "smtp:TBPIPE_SMTP_PASSWORD"]) == 0
    text = package.read_text()
    assert leaked(text) == []
    spec, platform = yaml.safe_load_all(text)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "notify"}
    assert root["notify"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert root["notify"]["dependentTasks"] == ["exit-handler-1"]
    assert spec["root"]["inputDefinitions"]["parameters"]["notify"]["defaultValue"] == \
        "env:TEAM_HOOK"
    status = spec["components"]["comp-notify"]["inputDefinitions"]["parameters"]["status"]
    assert status["parameterType"] == "TASK_FINAL_STATUS"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert len(executors) == len(spec["deploymentSpec"]["executors"])  # every step, notify too
    for executor in executors.values():
        by_name = {s["secretName"]: s for s in executor["secretAsEnv"]}
        assert by_name["tbpipe-creds"]["optional"] is True
        assert {k["secretKey"] for k in by_name["tbpipe-creds"]["keyToEnv"]} == \
            set(DEFAULT_SECRET_KEYS)
        assert by_name["smtp"]["optional"] is False
        assert by_name["smtp"]["keyToEnv"] == [{"secretKey": "TBPIPE_SMTP_PASSWORD",
                                               "envVar": "TBPIPE_SMTP_PASSWORD"}]
    plain = build_training_pipeline(CompileOptions()).pipeline_spec  # without --notify: as before
    assert "notify" not in {t.task_info.name for t in plain.root.dag.tasks.values()}
    assert not any(name.startswith("exit-handler") for name in plain.root.dag.tasks)
    assert plain.root.output_definitions.parameters  # its output, the summary, stays


@pytest.mark.parametrize("text, needle", [("UPPER", "is not a Secret name"),
                                          ("creds:", "keys must be environment variable"),
                                          ("creds:A-B", "keys must be environment variable")])
def test_a_bad_secret_is_one_line(text, needle, tmp_path, capsys):
    from tbpipe.pipelines.cli.main import main

    assert main(["compile", "--package", str(tmp_path / "p.yaml"), "--secret", text]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"tbpipe: error: --secret {text}: ") and needle in line
    assert not (tmp_path / "p.yaml").exists()


def test_a_cancelled_local_run_says_so(tmp_path, receiver):
    from tbpipe.pipelines.runners.local import notify_run_end
    from tbpipe.pipelines.training import PipelineParams

    params = PipelineParams(run_name="stopped", log_root=str(tmp_path), notify=receiver.url())
    notify_run_end(params, str(tmp_path / "kfp"), KeyboardInterrupt())
    (body,) = receiver.bodies
    assert body["state"] == "CANCELED" and body["text"].startswith(
        "tbpipe run default/stopped was cancelled")


def test_bad_notify_input_stops_before_anything_runs(tmp_path):
    from tbpipe.pipelines.cli.main import main

    assert main(["run", "--notify", "slack", "--log-root", str(tmp_path)]) == 1
    assert not any(tmp_path.iterdir())
    with pytest.raises(InputError):
        parse_target("env:1BAD")


def test_the_exit_task_names_the_step_that_failed_on_a_cluster(tmp_path, receiver):
    """KFP tells the exit task only that the run failed: the step's line is in its run folder.

    A claimed step that fails keeps its error line there (``step_run``); one that fails
    before claiming its run (its settings refused) writes nothing into a run's folder.
    """
    from tbpipe.components.common.run_place import step_run
    from tbpipe.components.notification.component import notify

    log_root = str(tmp_path / "logs")
    place = dict(log_root=log_root, experiment="nightly", run_name="r7", job_name="job-7")
    with pytest.raises(SystemExit):
        with step_run("evaluate", str(tmp_path / "out"), **place):
            raise InputError("settings refused before the claim")
    assert not (tmp_path / "logs" / "nightly" / "r7" / "_errors").exists()
    with pytest.raises(SystemExit):
        with step_run("train", str(tmp_path / "out"), **place) as here:
            here.claim()
            raise InputError("gs://b/train: no such file; run preprocess first")
    status = dsl.PipelineTaskFinalStatus(state="FAILED", pipeline_job_resource_name="jobs/7",
                                         pipeline_task_name="exit-handler-1", error_code=1,
                                         error_message="task failed")
    sent = notify.python_func(status=status, notify=receiver.url(), log_root=log_root,
                              experiment="nightly", run_name="r7", job_name="job-7")
    assert sent == 1
    (body,) = receiver.bodies
    assert body["failed_step"] == "train"
    assert body["error"] == "gs://b/train: no such file; run preprocess first"
    assert "failed step: train" in body["text"]
