"""A KServe InferenceService that follows a registry's ``champion``.

Object stores have no links, so there the served path is the InferenceService's
``spec.predictor.model.storageUri``: :func:`point_service` patches it (a JSON merge patch,
through the official ``kubernetes`` client's custom-objects API) to the champion's
``{promote_to}/vN/saved_model``, and sets the predictor's pod annotation
:data:`CHAMPION_ANNOTATION` to ``vN``. KServe rolls the predictor to the new model (a new
revision; the old one serves until the new one is ready). For a local registry on a volume
(``pvc://CLAIM/PATH/serving``, the link ``publish.link_serving`` moves) the storageUri
stays and the annotation alone rolls the pods, so that running model servers, which load a
model once, load the champion the link now names.

:func:`inference_service_manifest` is the one home of the InferenceService tbpipe serves
with; ``deploy/kserve/inferenceservice.yaml`` is the same object (a test compares them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, StorageError
from tbpipe.components.promotion import publish

GROUP, VERSION, PLURAL, KIND = ("serving.kserve.io", "v1beta1", "inferenceservices",
                                "InferenceService")
CHAMPION_ANNOTATION = "tbpipe/champion"  # on the predictor's pods: the version they serve
SERVICE_ACCOUNT = "tbpipe-predictor"  # deploy/kserve/serviceaccount.yaml
REQUEST_TIMEOUT_S = 30.0
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_CLAIM = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?(/.*)?\Z")


@dataclasses.dataclass(frozen=True)
class ServiceRef:
    """An InferenceService: its namespace and name."""

    namespace: str
    name: str

    @classmethod
    def parse(cls, text: str) -> ServiceRef:
        """``NAMESPACE/NAME`` (each a DNS label), or InputError naming the flag's value."""
        namespace, slash, name = text.partition("/")
        if not slash or not _DNS_LABEL.match(namespace) or not _DNS_LABEL.match(name):
            raise InputError(f"--inference-service {text!r}: give NAMESPACE/NAME of a KServe "
                             "InferenceService, e.g. models/tbpipe-classifier")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def storage_uri(target: str, version: str, pvc: str = "") -> str:
    """The ``storageUri`` that serves ``version`` of the registry ``target``.

    gs:// and s3:// name the version's SavedModel folder as they are; az:// and abfs://
    become KServe's ``https://ACCOUNT.blob.core.windows.net/CONTAINER/...`` (the account from
    ``AZURE_STORAGE_ACCOUNT_NAME``). A local registry is served from a volume: ``pvc`` is
    ``CLAIM[/PATH]``, where the registry folder lies on it, and the URI names its serving
    link, which follows ``champion``.

    Raises:
        InputError: a local registry without ``pvc``, or a store KServe cannot load from.

    """
    if not storage.is_remote(target):
        if not pvc or not _CLAIM.match(pvc):
            raise InputError(f"{target}: a local registry is served from a volume; give "
                             "--pvc CLAIM[/PATH], where this folder lies on the claim")
        return f"pvc://{pvc.strip('/')}/{publish.SERVING_LINK}"
    if pvc:
        raise InputError(f"--pvc {pvc}: only for a local registry; {target} is served from "
                         "its store")
    return _kserve_uri(publish.served_uri(target, version), target)


def _kserve_uri(uri: str, target: str) -> str:
    """``uri`` on a store as KServe's storage initializer names it; InputError if it can't."""
    scheme, _, rest = uri.partition("://")
    if scheme in ("gs", "s3"):
        return uri
    if scheme in ("az", "abfs", "abfss"):  # az://CONTAINER/... or abfs://CONTAINER@HOST/...
        container, _, path = rest.partition("/")
        container, at, host = container.partition("@")
        account = host.split(".", 1)[0] if at else os.environ.get(
            "AZURE_STORAGE_ACCOUNT_NAME", "")
        if not account:
            raise InputError(f"{target}: KServe names Azure Blob by its account: set "
                             "AZURE_STORAGE_ACCOUNT_NAME")
        return f"https://{account}.blob.core.windows.net/{container}/{path}"
    raise InputError(f"{target}: KServe cannot load a model from {scheme}://; use a registry "
                     "on gs://, s3://, az:// or a local folder on a volume")


def check_name(flag: str, value: str) -> None:
    """InputError unless ``value`` (given as ``flag``) is a Kubernetes name (a DNS label)."""
    if not _DNS_LABEL.match(value):
        raise InputError(f"{flag} {value!r}: not a Kubernetes name (lower-case letters, "
                         "digits and '-', at most 63, starting and ending alphanumeric)")


def inference_service_manifest(name: str, namespace: str, uri: str, version: str) -> dict:
    """The InferenceService serving ``uri`` (the champion ``version``'s SavedModel)."""
    metadata: dict = {"name": name, **({"namespace": namespace} if namespace else {}),
                      "labels": {"app.kubernetes.io/name": name,
                                 "app.kubernetes.io/part-of": "tbpipe"}}
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata,
        "spec": {"predictor": {
            "serviceAccountName": SERVICE_ACCOUNT, "minReplicas": 1, "maxReplicas": 3,
            "annotations": {CHAMPION_ANNOTATION: version},
            "model": {"modelFormat": {"name": "tensorflow"}, "storageUri": uri,
                      "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                    "limits": {"cpu": "2", "memory": "2Gi"}}}}}}


def prepare(service: str, target: str) -> ServiceRef:
    """Check ``--inference-service`` before anything moves; the service it names.

    The value (``NAMESPACE/NAME``), the registry's store (one KServe can load from) and the
    service itself (one read: it exists, the caller may read it, it serves a ``model``).

    Raises:
        InputError: a bad value, a store KServe cannot read, no such InferenceService.
        StorageError: the API refused or could not be reached.

    """
    ref = ServiceRef.parse(service)
    if storage.is_remote(target):
        _kserve_uri(target, target)
    with _custom_api() as api:
        _read_model(api, ref)
    return ref


def follow(ref: ServiceRef, target: str, version: str) -> str:
    """Point ``ref`` at ``version`` of the registry ``target``; the line saying what changed.

    On an object store its ``storageUri`` becomes the version's SavedModel folder; for a
    local registry (served through its volume's link) only the pods roll. See
    :func:`point_service`.
    """
    uri = storage_uri(target, version) if storage.is_remote(target) else None
    before = point_service(ref, uri, version)
    if uri is not None:
        return f"inference service {ref}: storageUri {before or '-'} -> {uri}"
    return (f"inference service {ref}: pods rolled to serve {version} (storageUri "
            f"{before or '-'}, the volume's serving link, unchanged)")


def point_service(ref: ServiceRef, uri: str | None, version: str) -> str:
    """Patch the InferenceService ``ref`` to serve ``version``; its storageUri before.

    One merge patch of ``spec.predictor.model.storageUri`` (to ``uri``; None leaves it, for
    a local registry whose volume link already follows) and the predictor's
    :data:`CHAMPION_ANNOTATION` (``version``: a change rolls the pods), after a read that
    checks the service serves a ``model`` (the v1beta1 form ``deploy/kserve`` uses).
    Idempotent: run it again after a failure.

    Raises:
        InputError: no such InferenceService, or one without ``spec.predictor.model``.
        StorageError: the API refused or could not be reached; one line.

    """
    with _custom_api() as api:
        before = str(_read_model(api, ref).get("storageUri", ""))
        predictor: dict = {"annotations": {CHAMPION_ANNOTATION: version}}
        if uri is not None:
            predictor["model"] = {"storageUri": uri}
        _call(ref, "patch", api.patch_namespaced_custom_object, GROUP, VERSION,
              ref.namespace, PLURAL, ref.name, {"spec": {"predictor": predictor}})
    return before


def _read_model(api, ref: ServiceRef) -> dict:  # noqa: ANN001 - kubernetes CustomObjectsApi
    """The service's ``spec.predictor.model``; InputError when it has none."""
    found = _call(ref, "read", api.get_namespaced_custom_object, GROUP, VERSION,
                  ref.namespace, PLURAL, ref.name)
    model = ((found.get("spec") or {}).get("predictor") or {}).get("model")
    if not isinstance(model, dict):
        raise InputError(f"InferenceService {ref}: its predictor has no model "
                         "(spec.predictor.model.storageUri, the field tbpipe points); "
                         "write it as deploy/kserve does")
    return model


@contextlib.contextmanager
def _custom_api() -> Iterator:
    """The custom-objects API on a client of its own, closed after the block."""
    from kubernetes import client

    from tbpipe.components.common.kube_api import api_client

    api = client.CustomObjectsApi(api_client("point the InferenceService at the champion"))
    try:
        yield api
    finally:
        api.api_client.close()


def _call(ref: ServiceRef, doing: str, call, *args: object) -> dict:  # noqa: ANN001
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return call(*args, _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            raise InputError(f"InferenceService {ref}: not found (kubectl get "
                             f"inferenceservice -n {ref.namespace}); create it first, e.g. "
                             "from tbpipe models serving-manifest") from None
        line = f"the Kubernetes API refused to {doing} InferenceService {ref}: {exc.status} " \
               f"{exc.reason}"
        if exc.status in (401, 403):
            line += f"; allow get and patch on {PLURAL}.{GROUP} in {ref.namespace}"
        raise StorageError(line) from None
    except HTTPError as exc:
        raise StorageError(f"cannot reach the Kubernetes API to {doing} InferenceService "
                           f"{ref} ({exc})") from None
