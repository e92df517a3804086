"""deploy/tensorboard: the kustomize base and its overlays, built and validated offline.

No kustomize binary is needed for the base: ``build`` applies what it uses (resources, metadata
labels, a configMapGenerator whose name gets a content hash, and the rewriting of the
references to it), then every object is validated with kubernetes-validate in strict mode
against a pinned Kubernetes version. The overlays (``overlays/pvc``, ``overlays/kubeflow``)
and deploy/kserve are built with ``kubectl kustomize`` (skipped where kubectl is missing).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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


def test_log_root_comes_from_the_one_config_value(built):
    container, config = _container(built), built["ConfigMap"]
    assert "--log-root=$(TBPIPE_LOG_ROOT)" in container["command"]
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
    assert "--log-root=$(TBPIPE_LOG_ROOT)" in container["command"]
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


# --- what every Deployment runs: tbpipe tensorboard, its mirror, the pod's lockdown ---------

#: The folder ``--mirror-dir`` names, where the base mounts the ``mirror`` emptyDir.
MIRROR_DIR = "/var/cache/tbpipe-mirror"
DOCKERFILE = BASE.parents[2] / "docker" / "tensorboard.Dockerfile"
README = BASE.parent / "README.md"
#: Every Deployment of deploy/tensorboard, and the loader ``auto`` picks for its log root.
DEPLOYMENTS = {"base": (BASE, "fast"), "pvc": (OVERLAYS / "pvc", "fast"),
               "s3": (OVERLAYS / "s3", "mirror"), "gcs-key": (OVERLAYS / "gcs-key", "fast")}


@dataclasses.dataclass
class Served:
    """What a Deployment's container serves with, as tbpipe and TensorBoard read it."""

    args: argparse.Namespace  # ``tbpipe tensorboard``'s flags, by tbpipe's own parser
    loader: str  # the loader ``auto`` picks for the log root
    mirror_dir: str | None  # the folder the mirror is given (None: the loader reads the root)
    tensorboard: argparse.Namespace  # the flags of the TensorBoard command tbpipe starts


def _pod_env(container: dict, config: dict) -> dict[str, str]:
    """The container's literal and ConfigMap variables (Secret ones stay unknown)."""
    env = {}
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        if "value" in var:
            env[var["name"]] = var["value"]
        elif ref:
            assert ref["name"] == config["metadata"]["name"], ref
            env[var["name"]] = config["data"][ref["key"]]
    return env


def serve(built: dict[str, dict]) -> Served:
    """The container's command and args as ``tbpipe`` parses them (``$(VAR)`` expanded as
    Kubernetes does), the loader ``auto`` picks for that log root where the data server is
    installed (as in the image), and the TensorBoard command line tbpipe then starts, parsed by
    TensorBoard's own flag definitions (an unknown flag after ``--`` fails here)."""
    from tbpipe.pipelines.cli.main import build_parser
    from tbpipe.pipelines.runners.tensorboard import resolve_loader, tensorboard_command

    container = _container(built)
    env = _pod_env(container, built["ConfigMap"])
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)
            for arg in container["command"] + container["args"]]
    assert argv[0] == "tbpipe", argv
    args = build_parser().parse_args(argv[1:])
    assert args.command == "tensorboard", argv
    choice, mirror_dir = resolve_loader(args.log_root, args.loader, args.mirror_dir, env,
                                        fast_available=True)
    command = tensorboard_command(args.log_root, args.host, args.port, choice.name,
                                  args.reload_interval, args.tensorboard_args, mirror_dir)
    return Served(args, choice.name, mirror_dir, tensorboard_flags(command[3:]))


def _entrypoint() -> list[str]:
    (line,) = re.findall(r"^ENTRYPOINT (.+)$", DOCKERFILE.read_text(), re.MULTILINE)
    return json.loads(line)


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_every_deployment_serves_through_tbpipe_tensorboard(name):
    import kubernetes_validate

    path, loader = DEPLOYMENTS[name]
    built = _by_kind(kustomize(path))
    for obj in built.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    container, pod = _container(built), built["Deployment"]["spec"]["template"]["spec"]
    log_root = built["ConfigMap"]["data"]["log_root"]
    served = serve(built)
    # The image's entry point: the same program, host and port (the command replaces it).
    entry = _entrypoint()
    assert container["command"][:2] == entry[:2] == ["tbpipe", "tensorboard"]
    assert served.args.host == entry[entry.index("--host") + 1] == "0.0.0.0"
    (port,) = [p for p in container["ports"] if p["name"] == "http"]
    assert served.args.port == int(entry[entry.index("--port") + 1]) == port["containerPort"]
    # tbpipe's flags in command, TensorBoard's in args after `--`.
    assert container["args"][0] == "--" and "--" not in container["command"]
    assert served.args.log_root == log_root and served.args.loader == "auto"
    assert served.loader == loader, (name, log_root)
    # The mirror: --mirror-dir on an emptyDir of its own, writable, with a documented limit.
    assert served.args.mirror_dir == MIRROR_DIR
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == MIRROR_DIR]
    assert not mount.get("readOnly")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert set(volume) == {"name", "emptyDir"} and "medium" not in volume["emptyDir"]  # disk
    limit = volume["emptyDir"]["sizeLimit"]
    assert re.fullmatch(r"\d+Gi", limit) and f"`sizeLimit: {limit}`" in README.read_text()
    # What TensorBoard then reads: the mirror, or the root itself.
    expected_logdir = MIRROR_DIR if loader == "mirror" else log_root
    assert served.mirror_dir == (MIRROR_DIR if loader == "mirror" else None)
    assert served.tensorboard.logdir == expected_logdir
    assert served.tensorboard.load_fast == "true"  # the native data server, either way
    assert (served.tensorboard.host, served.tensorboard.port) == ("0.0.0.0", port["containerPort"])
    assert served.tensorboard.reload_interval == served.args.reload_interval
    # Scratch files in /tmp, an emptyDir apart from the mirror's.
    assert _pod_env(container, built["ConfigMap"])["TMPDIR"] == "/tmp"
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp["name"] != mount["name"]
    assert [v for v in pod["volumes"] if v["name"] == tmp["name"]][0]["emptyDir"]
    # Non-root (the image's uid, group owning the emptyDirs), read-only root, nothing more.
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000,
                                      "runAsGroup": 1000, "fsGroup": 1000,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False


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


def test_s3_overlay_serves_from_the_mirror_with_its_flags(s3_overlay):
    served = serve(s3_overlay)
    assert served.loader == "mirror"  # the native data server cannot read s3:// itself
    assert served.args.reload_interval == 60  # the overlay's, after the base's 30
    assert served.tensorboard.logdir == served.args.mirror_dir == MIRROR_DIR
    assert served.tensorboard.load_fast == "true" and served.tensorboard.reload_interval == 60
    assert served.tensorboard.samples_per_plugin["scalars"] == 1000
    container, base = _container(s3_overlay), _container(_by_kind(build()))
    for field in ("command", "args"):  # appended, the base's kept
        assert container[field][:len(base[field])] == base[field], field
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
    served = serve(gcs_key_overlay)
    assert served.loader == "fast" and served.mirror_dir is None  # gs:// natively
    assert served.tensorboard.logdir == gcs_key_overlay["ConfigMap"]["data"]["log_root"]
    assert served.tensorboard.load_fast == "true" and served.tensorboard.reload_interval == 60
    assert served.tensorboard.samples_per_plugin["scalars"] == 1000
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
                     "patch": yaml.safe_dump([
                         {"op": "add", "path": "/spec/template/spec/containers/0/command/-",
                          "value": "--reload-interval=300"},
                         {"op": "add", "path": "/spec/template/spec/containers/0/args/-",
                          "value": "--samples_per_plugin=scalars=5000"}])}]}))
    built = _by_kind(kustomize(tmp_path))
    container = _container(built)
    tag = image("tensorboard", registry="localhost").rsplit(":", 1)[1]
    assert container["image"] == f"europe-docker.pkg.dev/my-project/tbpipe/tbpipe:{tag}"
    served = serve(built)
    assert served.args.reload_interval == 300 and served.tensorboard.reload_interval == 300
    assert served.tensorboard.samples_per_plugin["scalars"] == 5000  # the last value wins


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
