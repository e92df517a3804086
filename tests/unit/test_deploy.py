"""deploy/tensorboard: the kustomize base and its overlays, built and validated offline.

No kustomize binary is needed for the base: ``build`` applies what it uses (resources, metadata
labels, a configMapGenerator whose name gets a content hash, and the rewriting of the
references to it), then every object is validated with kubernetes-validate in strict mode
against a pinned Kubernetes version. The overlays (``overlays/pvc``, ``overlays/kubeflow``)
and deploy/kserve are built with ``kubectl kustomize`` (skipped where kubectl is missing).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tbpipe.components._image import image

BASE = Path(__file__).resolve().parents[2] / "deploy" / "tensorboard" / "base"
KUBERNETES_VERSION = "1.30.0"
SUPPORTED_KEYS = {"apiVersion", "kind", "labels", "resources", "configMapGenerator", "namespace"}


def _generated_configmaps(kustomization: dict) -> list[dict]:
    maps = []
    for gen in kustomization.get("configMapGenerator", []):
        data = dict(item.split("=", 1) for item in gen.get("literals", []))
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
        maps.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"{gen['name']}-{digest}"}, "data": data,
                     "_generator": gen["name"]})
    return maps


def _rename_refs(node, names: dict[str, str], parent: str = "") -> None:
    if isinstance(node, dict):
        if parent in ("configMapKeyRef", "configMapRef", "configMap") and node.get("name") in names:
            node["name"] = names[node["name"]]
        for key, value in node.items():
            _rename_refs(value, names, key)
    elif isinstance(node, list):
        for item in node:
            _rename_refs(item, names, parent)


def build(base: Path = BASE) -> list[dict]:
    """The objects ``kubectl kustomize base`` would print (for what this base uses)."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert set(kustomization) <= SUPPORTED_KEYS, set(kustomization) - SUPPORTED_KEYS
    objects = [doc for name in kustomization["resources"]
               for doc in yaml.safe_load_all((base / name).read_text()) if doc]
    maps = _generated_configmaps(kustomization)
    _rename_refs(objects, {m.pop("_generator"): m["metadata"]["name"] for m in maps})
    objects += maps
    labels = {k: v for entry in kustomization.get("labels", []) for k, v in entry["pairs"].items()}
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(labels)
        if "namespace" in kustomization:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


@pytest.fixture(scope="module")
def built() -> dict[str, dict]:
    return {obj["kind"]: obj for obj in build()}


def test_every_object_is_valid_kubernetes(built):
    import kubernetes_validate

    assert set(built) == {"Deployment", "Service", "ServiceAccount", "ConfigMap"}
    for obj in built.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_validator_rejects_a_broken_manifest(built):
    import kubernetes_validate

    broken = copy.deepcopy(built["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def _container(built) -> dict:
    (container,) = built["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_runs_the_tensorboard_image_of_this_version(built):
    assert _container(built)["image"] == image("tensorboard", registry="localhost")


def test_logdir_comes_from_the_one_config_value(built):
    container, config = _container(built), built["ConfigMap"]
    assert "--logdir=$(TBPIPE_LOG_ROOT)" in container["args"]
    (env,) = [e for e in container["env"] if e["name"] == "TBPIPE_LOG_ROOT"]
    ref = env["valueFrom"]["configMapKeyRef"]
    assert ref["name"] == config["metadata"]["name"] and ref["key"] in config["data"]
    assert config["data"][ref["key"]].startswith("gs://")
    others = json.dumps([obj for kind, obj in built.items() if kind != "ConfigMap"])
    assert "gs://" not in others  # the log root is defined once, nowhere else


def test_container_is_non_root_read_only_with_probes_and_resources(built):
    pod = built["Deployment"]["spec"]["template"]["spec"]
    container = _container(built)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names, probe
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and any(v["name"] == tmp[0]["name"] and "emptyDir" in v for v in pod["volumes"])
    assert "--load_fast=true" in container["args"]


def test_service_and_workload_identity(built):
    service, account = built["Service"], built["ServiceAccount"]
    pod_labels = built["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert built["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    port_names = {p["name"] for p in _container(built)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    pod = built["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com")
    assert pod["automountServiceAccountToken"] is False


# --- deploy/kserve: the selected model's SavedModel behind a KServe InferenceService ---------

KSERVE = BASE.parents[1] / "kserve"

#: The InferenceService fields this example uses, written out from the upstream CRD's
#: openAPIV3Schema (kserve config/crd/full/serving.kserve.io_inferenceservices.yaml, v1beta1):
#: types, required keys and the int-or-string quantities. Keys outside it are refused, so a
#: misspelt field fails here rather than on the cluster.
_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
_RESOURCES = {"type": "object", "additionalProperties": False, "properties": {
    "limits": {"type": "object", "additionalProperties": _QUANTITY},
    "requests": {"type": "object", "additionalProperties": _QUANTITY}}}
INFERENCE_SERVICE_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]*[a-z0-9])?$"},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "spec": {"type": "object", "required": ["predictor"], "additionalProperties": False,
                 "properties": {"predictor": {
                     "type": "object", "additionalProperties": False,
                     "properties": {
                         "serviceAccountName": {"type": "string"},
                         "minReplicas": {"type": "integer", "minimum": 0},
                         "maxReplicas": {"type": "integer", "minimum": 0},
                         "model": {
                             "type": "object", "required": ["modelFormat"],
                             "additionalProperties": False,
                             "properties": {
                                 "modelFormat": {
                                     "type": "object", "required": ["name"],
                                     "additionalProperties": False,
                                     "properties": {"name": {"type": "string"},
                                                    "version": {"type": "string"}}},
                                 "runtime": {"type": "string"},
                                 "protocolVersion": {"type": "string"},
                                 "storageUri": {"type": "string"},
                                 "resources": _RESOURCES}}}}}}}}


@pytest.fixture(scope="module")
def kserve() -> dict[str, dict]:
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(KSERVE)], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return {obj["kind"]: obj for obj in yaml.safe_load_all(out) if obj}


def test_kserve_builds_and_matches_the_crd_fields(kserve):
    import jsonschema
    import kubernetes_validate

    assert set(kserve) == {"InferenceService", "ServiceAccount"}
    jsonschema.validate(kserve["InferenceService"], INFERENCE_SERVICE_SCHEMA)
    kubernetes_validate.validate(kserve["ServiceAccount"], KUBERNETES_VERSION, strict=True)
    broken = copy.deepcopy(kserve["InferenceService"])
    broken["spec"]["predictor"]["model"]["storageURI"] = "gs://x"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, INFERENCE_SERVICE_SCHEMA)
    del broken["spec"]["predictor"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, INFERENCE_SERVICE_SCHEMA)


def test_kserve_serves_the_selected_saved_model(kserve):
    from tbpipe.components.common.serving import SAVED_MODEL_DIR

    predictor = kserve["InferenceService"]["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    assert model["storageUri"].startswith("gs://")
    assert model["storageUri"].rstrip("/").endswith(f"/best_model/{SAVED_MODEL_DIR}")
    assert {"cpu", "memory"} <= set(model["resources"]["requests"])
    assert {"cpu", "memory"} <= set(model["resources"]["limits"])
    account = kserve["ServiceAccount"]
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"].endswith(
        ".iam.gserviceaccount.com")
    for obj in kserve.values():
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tbpipe"


# --- deploy/tensorboard/overlays: a shared volume; Kubeflow's own Tensorboard resource -------

OVERLAYS = BASE.parent / "overlays"
COMPONENTS = BASE.parent / "components"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def _schema(name: str) -> dict:
    """A resource's field schema, written out from its upstream types (the file says which)."""
    return yaml.safe_load((SCHEMAS / f"{name}.schema.yaml").read_text())


TENSORBOARD_SCHEMA = _schema("kubeflow-tensorboard")
POD_DEFAULT_SCHEMA = _schema("kubeflow-poddefault")
#: What Kubeflow's controller reads: a bucket path (gs://, s3://), or a claim and the path in it.
LOGSPATH = r"^((gs|s3)://[^/]+/.+|pvc://[a-z0-9][-a-z0-9.]*/.*)$"


def kustomize(path: Path) -> list[dict]:
    """The objects ``kubectl kustomize path`` prints."""
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [obj for obj in yaml.safe_load_all(out) if obj]


def test_pvc_overlay_mounts_the_log_volume_and_serves_the_compiled_log_root():
    import kubernetes_validate

    from tbpipe.pipelines.placement import LOG_VOLUME_MOUNT, VOLUME_LOG_ROOT

    built = {obj["kind"]: obj for obj in kustomize(OVERLAYS / "pvc")}
    assert set(built) == {"Deployment", "Service", "ServiceAccount", "ConfigMap"}
    for obj in built.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert built["ConfigMap"]["data"]["log_root"] == VOLUME_LOG_ROOT
    container, pod = _container(built), built["Deployment"]["spec"]["template"]["spec"]
    assert "--logdir=$(TBPIPE_LOG_ROOT)" in container["args"]
    (env,) = [e for e in container["env"] if e["name"] == "TBPIPE_LOG_ROOT"]
    assert env["valueFrom"]["configMapKeyRef"]["name"] == built["ConfigMap"]["metadata"]["name"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == LOG_VOLUME_MOUNT]
    assert mount.get("readOnly") is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"]
    assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])  # base kept


def test_kubeflow_overlay_is_a_tensorboard_resource_in_a_profile_namespace():
    import jsonschema

    objects = kustomize(OVERLAYS / "kubeflow")
    assert sorted(obj["kind"] for obj in objects) == ["LimitRange", "PodDefault", "Tensorboard"]
    (obj,) = [obj for obj in objects if obj["kind"] == "Tensorboard"]
    jsonschema.validate(obj, TENSORBOARD_SCHEMA)
    assert re.match(LOGSPATH, obj["spec"]["logspath"]), obj["spec"]["logspath"]
    for obj in objects:
        assert obj["metadata"]["namespace"] != "kubeflow"  # a profile's, not Kubeflow's own
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "tbpipe"


def test_the_tensorboard_schema_refuses_what_the_resource_would(tmp_path):
    import jsonschema

    (good,) = [obj for obj in kustomize(OVERLAYS / "kubeflow") if obj["kind"] == "Tensorboard"]
    for change in ({"logsPath": "gs://b/tb"}, {"logspath": 3}, {}):
        broken = copy.deepcopy(good)
        broken["spec"] = change
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, TENSORBOARD_SCHEMA)
    broken = copy.deepcopy(good)
    del broken["metadata"]["namespace"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, TENSORBOARD_SCHEMA)


def test_kubeflow_overlay_takes_a_namespace_and_a_volume_logspath(tmp_path):
    """What the overlay's comments tell a user to do: set the namespace, use the claim."""
    import jsonschema

    from tbpipe.pipelines.placement import LOG_VOLUME_MOUNT, VOLUME_LOG_ROOT

    logspath = "pvc://tbpipe-logs/" + VOLUME_LOG_ROOT.removeprefix(LOG_VOLUME_MOUNT + "/")
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "kubeflow-user-jane",
        "resources": [os.path.relpath(OVERLAYS / "kubeflow", tmp_path)],
        "patches": [{"target": {"kind": "Tensorboard"}, "patch": yaml.safe_dump(
            [{"op": "replace", "path": "/spec/logspath", "value": logspath}])}]}))
    (obj,) = [obj for obj in kustomize(tmp_path) if obj["kind"] == "Tensorboard"]
    jsonschema.validate(obj, TENSORBOARD_SCHEMA)
    assert obj["metadata"]["namespace"] == "kubeflow-user-jane"
    assert obj["spec"]["logspath"] == "pvc://tbpipe-logs/logs"
    assert re.match(LOGSPATH, logspath)


# --- credentials, image, resources and flags per overlay (issue 26, item 7) -----------------

S3_SECRET = "tbpipe-tensorboard-s3"
#: The S3 variables a TensorBoard pod gets from the Secret: boto3's standard names, and the
#: endpoint also as S3_ENDPOINT (TensorBoard's S3 reader), from the one key AWS_ENDPOINT_URL.
S3_ENV = {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY":
          "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
          "S3_ENDPOINT": "AWS_ENDPOINT_URL", "AWS_REGION": "AWS_REGION"}


def tensorboard_flags(args: list[str]):  # noqa: ANN201 - an argparse Namespace
    """``args`` as TensorBoard itself parses them (its own flag definitions; last one wins)."""
    import argparse

    from tensorboard.plugins.core.core_plugin import CorePluginLoader

    parser = argparse.ArgumentParser()
    CorePluginLoader().define_flags(parser)
    return parser.parse_args(args)


def _by_kind(objects: list[dict]) -> dict[str, dict]:
    return {obj["kind"]: obj for obj in objects}


@pytest.fixture(scope="module")
def s3_overlay() -> dict[str, dict]:
    return _by_kind(kustomize(OVERLAYS / "s3"))


@pytest.fixture(scope="module")
def gcs_key_overlay() -> dict[str, dict]:
    return _by_kind(kustomize(OVERLAYS / "gcs-key"))


@pytest.fixture(scope="module")
def kubeflow_overlay() -> dict[str, dict]:
    return _by_kind(kustomize(OVERLAYS / "kubeflow"))


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def test_s3_overlay_takes_keys_endpoint_and_region_from_the_secret(s3_overlay):
    import kubernetes_validate

    assert set(s3_overlay) == {"Deployment", "Service", "ServiceAccount", "ConfigMap"}
    for obj in s3_overlay.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert s3_overlay["ConfigMap"]["data"]["log_root"].startswith("s3://")
    env = _env(_container(s3_overlay))
    for name, key in S3_ENV.items():
        assert "value" not in env[name], name  # never a literal credential in the manifest
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (S3_SECRET, key), name
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # no keys: the pod says why
        assert not env[name]["valueFrom"]["secretKeyRef"].get("optional", False)
    for name in ("AWS_ENDPOINT_URL", "S3_ENDPOINT", "AWS_REGION"):  # AWS itself needs neither
        assert env[name]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "TBPIPE_LOG_ROOT" in env  # the base's env kept
    annotations = s3_overlay["ServiceAccount"]["metadata"].get("annotations", {})
    assert "iam.gke.io/gcp-service-account" not in annotations


def test_s3_overlay_runs_the_python_loader_with_its_flags(s3_overlay):
    container = _container(s3_overlay)
    flags = tensorboard_flags(container["args"])
    assert flags.logdir == "$(TBPIPE_LOG_ROOT)"
    assert flags.load_fast == "false"  # the native data server cannot read s3://
    assert flags.reload_interval == 60 and flags.max_reload_threads == 8
    assert flags.samples_per_plugin["scalars"] == 1000
    base = _container(_by_kind(build()))
    assert container["args"][:len(base["args"])] == base["args"]  # appended, the base's kept
    assert container["resources"] == base["resources"]


def test_gcs_key_overlay_mounts_the_key_file_read_only(gcs_key_overlay):
    import kubernetes_validate

    for obj in gcs_key_overlay.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    container = _container(gcs_key_overlay)
    pod = gcs_key_overlay["Deployment"]["spec"]["template"]["spec"]
    key_file = _env(container)["GOOGLE_APPLICATION_CREDENTIALS"]["value"]
    (mount,) = [m for m in container["volumeMounts"]
                if key_file.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert secret["secretName"] == "tbpipe-tensorboard-gcs-key"
    assert [item["path"] for item in secret["items"]] == [os.path.basename(key_file)]
    assert secret["defaultMode"] & 0o077 == 0  # the key readable by its owner only
    assert gcs_key_overlay["ConfigMap"]["data"]["log_root"].startswith("gs://")
    flags = tensorboard_flags(container["args"])
    assert flags.load_fast == "true" and flags.reload_interval == 60  # gs:// natively
    annotations = gcs_key_overlay["ServiceAccount"]["metadata"].get("annotations", {})
    assert "iam.gke.io/gcp-service-account" not in annotations


def test_the_new_overlays_run_the_pinned_tensorboard_image(s3_overlay, gcs_key_overlay):
    tag = image("tensorboard", registry="localhost").rsplit(":", 1)[1]
    assert tag.endswith("-tensorboard") and not tag.startswith("latest")
    for built in (s3_overlay, gcs_key_overlay):
        assert _container(built)["image"] == f"localhost/tbpipe:{tag}"


def test_an_overlay_sets_the_image_registry_and_the_flags(tmp_path):
    """What README.md tells a team to do: its registry, its flags, on top of an overlay."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(OVERLAYS / "s3", tmp_path)],
        "images": [{"name": "localhost/tbpipe",
                    "newName": "europe-docker.pkg.dev/my-project/tbpipe/tbpipe"}],
        "patches": [{"target": {"kind": "Deployment", "name": "tbpipe-tensorboard"},
                     "patch": yaml.safe_dump([{
                         "op": "add", "path": "/spec/template/spec/containers/0/args/-",
                         "value": "--reload_interval=300"}])}]}))
    container = _container(_by_kind(kustomize(tmp_path)))
    tag = image("tensorboard", registry="localhost").rsplit(":", 1)[1]
    assert container["image"] == f"europe-docker.pkg.dev/my-project/tbpipe/tbpipe:{tag}"
    assert tensorboard_flags(container["args"]).reload_interval == 300


def test_kubeflow_poddefault_gives_the_tensorboard_pod_the_s3_secret(kubeflow_overlay):
    import jsonschema
    import kubernetes_validate

    default, board = kubeflow_overlay["PodDefault"], kubeflow_overlay["Tensorboard"]
    jsonschema.validate(default, POD_DEFAULT_SCHEMA)
    # The controller copies the Tensorboard's labels to its pod; the webhook matches on them.
    selector = default["spec"]["selector"]["matchLabels"]
    assert selector.items() <= board["metadata"]["labels"].items()
    assert default["metadata"]["namespace"] == board["metadata"]["namespace"]
    # The same variables from the same Secret as the s3 overlay's Deployment.
    env = {e["name"]: e for e in default["spec"]["env"]}
    assert set(env) == set(S3_ENV)
    for name, key in S3_ENV.items():
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"], ref["optional"]) == (S3_SECRET, key, True), name
    # The injected core types, field by field: as a container of a Pod.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tb"},
           "spec": {"containers": [{"name": "tensorboard", "image": "tb",
                                    "env": default["spec"]["env"]}]}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_the_poddefault_schema_refuses_what_the_resource_would(kubeflow_overlay):
    import jsonschema

    good = kubeflow_overlay["PodDefault"]
    for path, value in ((("spec", "selectors"), {}), (("spec", "env"), {"name": "A"}),
                        (("spec", "selector", "matchLabel"), {}),
                        (("apiVersion",), "kubeflow.org/v1")):
        broken = copy.deepcopy(good)
        node = broken
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, POD_DEFAULT_SCHEMA)
    broken = copy.deepcopy(good)
    del broken["spec"]["selector"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, POD_DEFAULT_SCHEMA)


def test_container_defaults_give_kubeflows_pod_the_base_resources(kubeflow_overlay):
    import kubernetes_validate

    limit_range = kubeflow_overlay["LimitRange"]
    kubernetes_validate.validate(limit_range, KUBERNETES_VERSION, strict=True)
    (limits,) = limit_range["spec"]["limits"]
    resources = _container(_by_kind(build()))["resources"]
    assert limits["type"] == "Container"
    assert limits["defaultRequest"] == resources["requests"]
    assert limits["default"] == resources["limits"]
