"""The served path follows ``champion``: the local link, and a KServe InferenceService.

The InferenceService lives on KubeStandIn, a stand-in Kubernetes API server (a TEST DOUBLE:
no KServe runs here); the tests read back the PATCH bodies it received and the object.
"""

import copy
import os
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError
from tbpipe.components.promotion import inference_service, publish
from tests.kube_standin import KubeStandIn
from tests.reliability.test_production import Killed, fake_model, promote, snapshot
from tests.unit.test_deploy import INFERENCE_SERVICE_SCHEMA, KUBERNETES_VERSION
from tests.unit.test_registry import tbpipe

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "kserve")


def served(prod: str) -> str:
    """The tag of the model the local serving link leads to (what a model server loads)."""
    with open(os.path.join(prod, "serving", "1", "saved_model.pb")) as handle:
        return handle.read()[3:4]


@pytest.fixture
def kube(tmp_path, monkeypatch):
    """KubeStandIn (a test double) holding the InferenceService team/clf, and its kubeconfig."""
    with KubeStandIn() as kube:
        monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in-cluster
        kube.put_set("inferenceservices", inference_service.inference_service_manifest(
            "clf", "team", "gs://old/saved_model", "v0"))
        yield kube


def role_verbs() -> set[str]:
    """What deploy/kserve/champion-rbac lets the caller do to InferenceServices."""
    with open(os.path.join(DEPLOY, "champion-rbac", "role.yaml")) as handle:
        role = yaml.safe_load(handle)
    return {verb for rule in role["rules"]
            if rule["apiGroups"] == [inference_service.GROUP]
            and rule["resources"] == [inference_service.PLURAL] for verb in rule["verbs"]}


def storage_uri(kube: KubeStandIn) -> str:
    return kube.sets[("inferenceservices", "clf")]["spec"]["predictor"]["model"]["storageUri"]


def test_the_serving_link_follows_champion_through_promotions_rollback_and_alias(
        tmp_path, capsys):
    prod = str(tmp_path / "prod")
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    assert os.readlink(f"{prod}/serving") == "v1/saved_model" and served(prod) == "a"
    promote(fake_model(tmp_path / "b", "b"), prod, "r2")
    assert os.readlink(f"{prod}/serving") == "v2/saved_model" and served(prod) == "b"
    before = snapshot(prod)  # regular files only: the link is not one
    code, out, _ = tbpipe(capsys, "models", "rollback", prod, "--to", "v1")
    assert code == 0 and out.splitlines()[1] == f"serving: {prod}/serving -> v1/saved_model"
    assert served(prod) == "a" and snapshot(prod).keys() == before.keys()  # nothing copied
    assert tbpipe(capsys, "models", "alias", prod, "staging", "v2")[0] == 0
    assert served(prod) == "a"  # another alias: the served path stays
    assert tbpipe(capsys, "models", "alias", prod, "champion", "v2")[0] == 0
    assert served(prod) == "b"
    moved = str(tmp_path / "mounted")  # relative: it resolves wherever the volume is mounted
    shutil.copytree(prod, moved, symlinks=True)
    assert os.path.islink(f"{moved}/serving") and served(moved) == "b"
    assert sorted(os.listdir(prod)) == ["promotion.json", "serving", "v1", "v2"]
    umask = os.umask(0)
    os.umask(umask)
    for rel in ("promotion.json", "serving/1/saved_model.pb", "v1/model.json"):  # as usual:
        assert os.stat(f"{prod}/{rel}").st_mode & 0o777 == 0o666 & ~umask  # another user reads


@pytest.mark.parametrize("dies_in", ["symlink", "replace"])
def test_a_crash_between_pointer_and_link_is_repaired_by_the_next_command(
        tmp_path, capsys, monkeypatch, dies_in):
    """Killed making the new link, or renaming it: the link still names a whole version."""
    prod = str(tmp_path / "prod")
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    promote(fake_model(tmp_path / "b", "b"), prod, "r2")
    real = getattr(os, dies_in)

    def dying(src, dst, *args, **kwargs):
        if os.path.basename(dst) in ("serving", ".serving.tmp"):
            raise Killed(dies_in)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, dies_in, dying)
    with pytest.raises(Killed):
        publish.move_alias(prod, "champion", "v1", "rollback")
    monkeypatch.setattr(os, dies_in, real)
    assert publish.read_record(prod)["aliases"]["champion"] == "v1"  # the pointer moved
    assert os.readlink(f"{prod}/serving") == "v2/saved_model" and served(prod) == "b"  # whole
    code, out, _ = tbpipe(capsys, "models", "alias", prod, "champion")
    assert "serving -> v2/saved_model (behind champion v1: a command was interrupted" in out
    assert tbpipe(capsys, "models", "alias", prod, "staging", "v2")[0] == 0  # any move
    assert os.readlink(f"{prod}/serving") == "v1/saved_model" and served(prod) == "a"
    assert not os.path.lexists(f"{prod}/.serving.tmp")
    monkeypatch.setattr(os, dies_in, dying)
    with pytest.raises(Killed):  # killed again, in a promotion this time
        promote(fake_model(tmp_path / "c", "c"), prod, "r3")
    monkeypatch.setattr(os, dies_in, real)
    assert served(prod) == "a"
    promote(fake_model(tmp_path / "d", "d"), prod, "r4")
    assert os.readlink(f"{prod}/serving") == "v4/saved_model" and served(prod) == "d"


def test_a_serving_entry_that_is_not_tbpipes_link_is_refused(tmp_path):
    prod = tmp_path / "prod"
    (prod / "serving").mkdir(parents=True)
    with pytest.raises(InputError, match="serving: not tbpipe's link to the champion"):
        promote(fake_model(tmp_path / "a", "a"), str(prod), "r1")
    assert os.listdir(prod) == ["serving"]


@pytest.mark.s3
def test_on_s3_the_inference_service_follows_champion(s3_root, kube, tmp_path, capsys):
    prod = storage.join(s3_root, "prod")
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    promote(fake_model(tmp_path / "b", "b"), prod, "r2")
    code, out, _ = tbpipe(capsys, "models", "rollback", prod, "--to", "v1",
                          "--inference-service", "team/clf")
    assert code == 0 and out.splitlines()[1:] == [
        f"serve (KServe storageUri): {prod}/v1/saved_model",
        f"inference service team/clf: storageUri gs://old/saved_model -> "
        f"{prod}/v1/saved_model"]
    assert kube.patches == [("inferenceservices", "clf", {"spec": {"predictor": {
        "annotations": {"tbpipe/champion": "v1"},
        "model": {"storageUri": f"{prod}/v1/saved_model"}}}})]
    assert storage_uri(kube) == f"{prod}/v1/saved_model" and not kube.problems
    assert "serving" not in {rel.split("/")[0] for rel in storage.list_files(prod)}

    promote(fake_model(tmp_path / "c", "c"), prod, "r3")  # the promote step does not patch:
    assert tbpipe(capsys, "models", "alias", prod, "champion",  # this follows it
                  "--inference-service", "team/clf")[0] == 0
    assert storage_uri(kube) == f"{prod}/v3/saved_model"
    assert kube.patches[-1][2]["spec"]["predictor"]["annotations"] == {
        "tbpipe/champion": "v3"}

    code, out, _ = tbpipe(capsys, "models", "serving-manifest", prod, "--namespace", "team")
    manifest = yaml.safe_load(out)
    assert manifest["spec"]["predictor"]["model"]["storageUri"] == f"{prod}/v3/saved_model"
    assert manifest["metadata"]["namespace"] == "team"


def test_a_local_registry_rolls_the_service_pods_and_keeps_its_storage_uri(
        kube, tmp_path, capsys):
    prod = str(tmp_path / "prod")
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    promote(fake_model(tmp_path / "b", "b"), prod, "r2")
    code, out, _ = tbpipe(capsys, "models", "rollback", prod, "--to", "v1",
                          "--inference-service", "team/clf")
    assert code == 0 and out.splitlines()[-1].startswith(
        "inference service team/clf: pods rolled to serve v1")
    assert kube.patches == [("inferenceservices", "clf", {"spec": {"predictor": {
        "annotations": {"tbpipe/champion": "v1"}}}})]
    assert storage_uri(kube) == "gs://old/saved_model" and served(prod) == "a"
    assert {method.lower() for method, _ in kube.requests} == role_verbs() == {"get", "patch"}


def test_the_champion_rbac_builds_and_is_valid():
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run(["kubectl", "kustomize", os.path.join(DEPLOY, "champion-rbac")],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    objects = {obj["kind"]: obj for obj in yaml.safe_load_all(out) if obj}
    assert set(objects) == {"Role", "RoleBinding"}
    for obj in objects.values():
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert objects["RoleBinding"]["roleRef"]["name"] == objects["Role"]["metadata"]["name"]


@pytest.mark.parametrize("argv, line, moved", [
    (["rollback", "PROD", "--to", "v1", "--inference-service", "clf"],
     "--inference-service 'clf': give NAMESPACE/NAME", False),
    (["alias", "PROD", "staging", "v1", "--inference-service", "team/clf"],
     "--inference-service: serves champion, not staging", False),
    (["rollback", "PROD", "--to", "v1", "--inference-service", "team/nope"],
     "InferenceService team/nope: not found (kubectl get inferenceservice -n team)", False),
    (["rollback", "PROD", "--to", "v1", "--inference-service", "team/clf", "PATCH-FAILS"],
     "champion moved to v1 in PROD, but the Kubernetes API refused to patch "
     "InferenceService team/clf: 500", True),
    (["serving-manifest", "PROD"], "PROD: a local registry is served from a volume", False),
    (["serving-manifest", "PROD", "--pvc", "c", "--name", "Clf"],
     "--name 'Clf': not a Kubernetes name", False),
])
def test_serving_errors_are_one_line(kube, tmp_path, capsys, argv, line, moved):
    """Checked before anything moves; a patch refused after the move says what to rerun."""
    prod = str(tmp_path / "prod")
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    promote(fake_model(tmp_path / "b", "b"), prod, "r2")
    if "PATCH-FAILS" in argv:
        argv = argv[:-1]
        kube.fail(500, "PATCH", "/apis/serving.kserve.io/")
    code, _, err = tbpipe(capsys, "models", *[a.replace("PROD", prod) for a in argv])
    assert code == 1 and err.startswith(f"tbpipe: error: {line.replace('PROD', prod)}"), err
    assert err.count("\n") == 1 and not kube.patches
    assert publish.read_record(prod)["aliases"]["champion"] == ("v1" if moved else "v2")
    assert served(prod) == ("a" if moved else "b")
    if moved:
        assert err.rstrip().endswith(f"run tbpipe models alias {prod} champion "
                                     "--inference-service team/clf to try again")
        assert tbpipe(capsys, "models", "alias", prod, "champion",  # the rerun it names
                      "--inference-service", "team/clf")[0] == 0
        assert kube.patches[-1][2]["spec"]["predictor"]["annotations"] == {
            "tbpipe/champion": "v1"}


def test_a_store_kserve_cannot_read_moves_nothing(kube, tmp_path, capsys):
    prod = "memory://served-test/prod"  # fsspec's in-memory store: no KServe reader for it
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    promote(fake_model(tmp_path / "b", "b"), prod, "r2")
    code, _, err = tbpipe(capsys, "models", "rollback", prod, "--to", "v1",
                          "--inference-service", "team/clf")
    assert code == 1 and err.splitlines()[-1] == (
        f"tbpipe: error: {prod}: KServe cannot load a model from memory://; use a registry on "
        "gs://, s3://, az:// or a local folder on a volume")
    assert publish.read_record(prod)["aliases"]["champion"] == "v2" and not kube.patches
    storage.remove(prod)


def test_the_manifest_is_deploy_kserves_and_a_local_one_names_the_link(tmp_path, capsys):
    with open(os.path.join(DEPLOY, "inferenceservice.yaml")) as handle:
        deployed = yaml.safe_load(handle)
    model = deployed["spec"]["predictor"]["model"]
    built = inference_service.inference_service_manifest(
        deployed["metadata"]["name"], "", model["storageUri"], "v1")
    assert built["spec"]["predictor"].pop("annotations") == {"tbpipe/champion": "v1"}
    built["metadata"]["labels"].pop("app.kubernetes.io/part-of")  # kustomize adds it there
    assert built == deployed

    prod = str(tmp_path / "prod")
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    code, out, _ = tbpipe(capsys, "models", "serving-manifest", prod, "--pvc",
                          "models-claim/digits")
    manifest = yaml.safe_load(out)
    assert code == 0 and manifest["spec"]["predictor"]["model"]["storageUri"] == \
        "pvc://models-claim/digits/serving"
    assert manifest["spec"]["predictor"]["annotations"] == {"tbpipe/champion": "v1"}
    schema = copy.deepcopy(INFERENCE_SERVICE_SCHEMA)  # plus the pods' annotations (the CRD's
    schema["properties"]["spec"]["properties"]["predictor"]["properties"]["annotations"] = {
        "type": "object", "additionalProperties": {"type": "string"}}  # ComponentExtensionSpec)
    jsonschema.validate(manifest, schema)


@pytest.mark.parametrize("target, want", [
    ("gs://b/models/digits", "gs://b/models/digits/v2/saved_model"),
    ("s3://b/models/digits", "s3://b/models/digits/v2/saved_model"),
    ("abfs://models@acct.dfs.core.windows.net/digits",
     "https://acct.blob.core.windows.net/models/digits/v2/saved_model"),
])
def test_storage_uris_kserve_reads(target, want):
    assert inference_service.storage_uri(target, "v2") == want


def test_storage_uris_kserve_cannot_read_are_refused(monkeypatch):
    with pytest.raises(InputError, match="--pvc c: only for a local registry"):
        inference_service.storage_uri("gs://b/models", "v1", pvc="c")
    monkeypatch.delenv("AZURE_STORAGE_ACCOUNT_NAME", raising=False)
    with pytest.raises(InputError, match="set AZURE_STORAGE_ACCOUNT_NAME"):
        inference_service.storage_uri("az://models/digits", "v1")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "acct")
    assert inference_service.storage_uri("az://models/digits", "v1") == \
        "https://acct.blob.core.windows.net/models/digits/v1/saved_model"


def test_the_promote_steps_inference_service_is_checked_at_the_edge():
    from tbpipe.components.common.errors import SettingError
    from tbpipe.components.promotion.config import PromoteConfig, check_promote_params

    with pytest.raises(SettingError, match="inference_service='clf': must be NAMESPACE/NAME"):
        PromoteConfig(inference_service="clf")
    assert PromoteConfig(inference_service="team/clf").inference_service == "team/clf"
    values = {"baseline_model": "", "force_promote": False, "gate": "", "mlflow_uri": "",
              "inference_service": "team/clf", "promote_to": ""}
    with pytest.raises(SettingError, match="--inference-service='team/clf': needs --promote"):
        check_promote_params(values)
    check_promote_params({**values, "promote_to": "gs://b/models"})
