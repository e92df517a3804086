"""The few Kubeflow Pipelines API calls ``tbpipe submit`` makes, through ``kfp.Client``.

Each call runs inside ``calling(...)``: kfp.Client's own prints and warnings are kept off the
terminal, and every failure (HTTP error, refused connection, unreadable token, no answer in
time) becomes a TbpipeError of one line naming what was being done and what to do about it.

Every request has a timeout (``--request-timeout``: connecting, and each wait for the server's
bytes) and failed connections are retried at most ``CONNECT_RETRIES`` times, never reads, so
one call gives up within ``(CONNECT_RETRIES + 1) x`` the timeout; kfp.Client passes no timeout
of its own and would wait forever on a server that accepts connections and never answers.
:func:`tbpipe.pipelines.kfp_compat.open_client` bounds its requests (through kfp's private
names, on the kfp releases it was checked with); on another kfp each call gets the same
budget as one deadline instead (:func:`tbpipe.pipelines.kfp_compat.request_deadline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator

from tbpipe.components.common.errors import InputError, SettingError, TbpipeError
from tbpipe.components.common.limits import check_finite
from tbpipe.pipelines.kfp_compat import NoAnswer, open_client, request_deadline

DEFAULT_HOST = "the default KFP address ($KF_PIPELINES_ENDPOINT, in-cluster or kubeconfig)"
DEFAULT_REQUEST_TIMEOUT_S = 60.0
CONNECT_RETRIES = 2


@dataclasses.dataclass(frozen=True)
class PackageInfo:
    """What submit needs from a compiled pipeline YAML."""

    name: str
    parameters: dict[str, dict]


@dataclasses.dataclass(frozen=True)
class PipelineTarget:
    """The uploaded pipeline version a run is created from."""

    pipeline_id: str
    version_id: str
    version_name: str
    new_pipeline: bool

    def describe(self) -> str:
        """Say how it was uploaded: as a new pipeline or as a new version."""
        if self.new_pipeline:
            return f"uploaded as a new pipeline (version {self.version_name})"
        return f"uploaded new version {self.version_name}"


def read_package(path: str) -> PackageInfo:
    """Read the name and input parameters of a compiled pipeline YAML (InputError if not one)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster
            spec = next(iter(yaml.load_all(handle, Loader=loader)), None)
    except OSError as exc:
        raise InputError(f"--package {path}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"--package {path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict) or not spec.get("pipelineInfo", {}).get("name") \
            or "root" not in spec:
        raise InputError(f"--package {path}: not a KFP v2 pipeline YAML (no pipelineInfo/root); "
                         "write one with tbpipe compile")
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    return PackageInfo(spec["pipelineInfo"]["name"], parameters)


def api_error_line(host: str, doing: str, exc: Exception) -> str:
    """One line for a kfp_server_api.ApiException raised while ``doing``."""
    status, reason = getattr(exc, "status", 0), getattr(exc, "reason", "") or ""
    detail = _server_message(getattr(exc, "body", None))
    said = f"{status} {reason}".strip() + (f": {detail}" if detail else "")
    if not status:
        return f"cannot reach KFP at {host} while {doing}: {reason}"
    if status in (401, 403):
        return (f"KFP at {host} refused the request while {doing} ({said}): give a valid token "
                "with --token-file or $KFP_TOKEN, and --namespace on a multi-user cluster")
    if status == 404:
        return (f"KFP at {host} answered {said} while {doing}: check --endpoint points at the KFP "
                "API (e.g. http://localhost:8080 after kubectl port-forward) and --namespace")
    if status >= 500:
        return (f"KFP at {host} failed while {doing} ({said}): try again, or read the "
                "ml-pipeline pod's logs (kubectl logs -n kubeflow deploy/ml-pipeline)")
    return f"KFP at {host} rejected the request while {doing} ({said})"


def _server_message(body: object) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        data = json.loads(body)
        text = (data.get("message") or data.get("error") or "") if isinstance(data, dict) else data
    except ValueError:
        text = str(body)
    text = (str(text).strip().splitlines() or [""])[0]
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def calling(host: str, doing: str, timeout: float = DEFAULT_REQUEST_TIMEOUT_S) -> Iterator[None]:
    """Run kfp.Client calls quietly; turn their failures into one-line TbpipeErrors."""
    import kfp_server_api
    import urllib3

    retries_log = logging.getLogger("urllib3")  # its "Retrying ..." lines are not ours to show
    level = retries_log.level
    retries_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
                request_deadline((CONNECT_RETRIES + 1) * timeout):
            warnings.simplefilter("ignore")
            yield
    except NoAnswer:
        raise TbpipeError(_no_answer(host, doing, timeout)) from None
    except kfp_server_api.ApiException as exc:
        raise TbpipeError(api_error_line(host, doing, exc)) from None
    except urllib3.exceptions.HTTPError as exc:
        cause = getattr(exc, "reason", None) or exc
        no_answer = isinstance(cause, urllib3.exceptions.TimeoutError) and not isinstance(
            cause, urllib3.exceptions.NewConnectionError)  # a refusal is one (urllib3 2.x)
        if no_answer:
            raise TbpipeError(_no_answer(host, doing, timeout)) from None
        reason = "connection refused" if "refused" in str(cause).lower() else str(cause)
        raise TbpipeError(f"cannot connect to KFP at {host} while {doing} ({reason}): check "
                          "--endpoint / $KFP_HOST and that the API is reachable") from None
    except (OSError, ValueError, TimeoutError) as exc:
        raise TbpipeError(f"KFP at {host}: {doing} failed: {str(exc).splitlines()[0]}") from None
    finally:
        retries_log.setLevel(level)


def _no_answer(host: str, doing: str, timeout: float) -> str:
    return (f"KFP at {host} did not answer within {timeout:g}s while {doing}: check --endpoint "
            "points at the KFP API, or raise --request-timeout")


def check_timeout(timeout: float) -> None:
    """SettingError unless ``timeout`` is a finite number of seconds above 0."""
    if not check_finite("--request-timeout", timeout) > 0:
        raise SettingError("--request-timeout", timeout, "must be greater than 0 (seconds)")


class KfpConnection:
    """A kfp.Client with one-line errors, for the calls submit makes."""

    def __init__(self, client: object, host: str, namespace: str | None,
                 timeout: float = DEFAULT_REQUEST_TIMEOUT_S) -> None:
        self.client, self.host, self.namespace = client, host, namespace
        self.timeout = timeout

    @classmethod
    def open(cls, host: str | None, namespace: str | None, token_file: str | None = None,
             token: str | None = None,
             timeout: float = DEFAULT_REQUEST_TIMEOUT_S) -> KfpConnection:
        """Connect as kfp.Client does (host, else in-cluster/kubeconfig), with a token if given.

        Every request of the client waits at most ``timeout`` seconds (see the module doc).
        """
        check_timeout(timeout)
        credentials = None
        if token_file:
            if not os.path.isfile(token_file):
                raise InputError(f"--token-file {token_file}: no such file")
            from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

            credentials = ServiceAccountTokenVolumeCredentials(path=token_file)
        shown = host or DEFAULT_HOST
        with calling(shown, "connecting", timeout):
            client = open_client(timeout, CONNECT_RETRIES, host=host,
                                 namespace=namespace or "kubeflow",
                                 existing_token=token or None, credentials=credentials)
        return cls(client, shown, namespace, timeout)

    def _calling(self, doing: str) -> contextlib.AbstractContextManager:
        return calling(self.host, doing, self.timeout)

    def upload(self, package: str, name: str, version: str) -> PipelineTarget:
        """Upload ``package`` as pipeline ``name``, or as a new version when it exists."""
        with self._calling(f"looking up pipeline {name!r}"):
            flt = json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                              "stringValue": name}]})
            found = self.client.list_pipelines(filter=flt, namespace=self.namespace).pipelines
        if found and len(found) > 1:
            raise TbpipeError(f"KFP at {self.host} has {len(found)} pipelines named {name!r}: "
                              "delete the extra ones")
        if found:
            pipeline_id = found[0].pipeline_id
            with self._calling(f"uploading version {version} of pipeline {name!r}"):
                made = self.client.upload_pipeline_version(package, version,
                                                           pipeline_id=pipeline_id)
            return PipelineTarget(pipeline_id, made.pipeline_version_id, version, False)
        with self._calling(f"uploading pipeline {name!r}"):
            pipeline = self.client.upload_pipeline(package, pipeline_name=name,
                                                   namespace=self.namespace)
            versions = self.client.list_pipeline_versions(
                pipeline.pipeline_id, sort_by="created_at desc", page_size=1).pipeline_versions
        if not versions:
            raise TbpipeError(f"KFP at {self.host} created pipeline {name!r} but lists no version")
        first = versions[0]
        return PipelineTarget(pipeline.pipeline_id, first.pipeline_version_id,
                              first.display_name or name, True)

    def experiment(self, name: str) -> str:
        """Return the id of experiment ``name``, created when missing."""
        with self._calling(f"getting or creating experiment {name!r}"):
            return self.client.create_experiment(name, namespace=self.namespace).experiment_id

    def start_run(self, experiment_id: str, run_name: str, target: PipelineTarget,
                  arguments: dict[str, object], pipeline_root: str | None = None,
                  service_account: str | None = None) -> str:
        """Create the run from the uploaded version; returns its id."""
        with self._calling(f"creating run {run_name!r}"):
            run = self.client.run_pipeline(
                experiment_id, run_name, params=arguments, pipeline_id=target.pipeline_id,
                version_id=target.version_id, pipeline_root=pipeline_root,
                service_account=service_account)
        return run.run_id

    def run_status(self, run_id: str) -> tuple[str, list[tuple[str, str]], str]:
        """Return the run's state, its steps' ``(name, state)`` and its error message (if any)."""
        with self._calling(f"reading run {run_id}"):
            run = self.client.get_run(run_id)
        tasks = (run.run_details.task_details if run.run_details else None) or []
        steps = [(t.display_name, str(t.state or "PENDING")) for t in tasks
                 if t.display_name and t.display_name != "root"
                 and not t.display_name.endswith("-driver")]
        errors = [run.error] + [t.error for t in tasks if str(t.state) == "FAILED"]
        message = next((e.message for e in errors if e is not None and e.message), "")
        return str(run.state or "PENDING"), steps, (message.splitlines() or [""])[0]
