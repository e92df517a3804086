"""The registry (``--promote-to``): versions, aliases, rollback, ``tbpipe models``."""

import json

import pytest

from tbpipe.components.common.errors import InputError
from tbpipe.components.promotion import publish
from tbpipe.pipelines.cli.main import main
from tests.reliability.test_production import fake_model, promote, promote_together, snapshot


@pytest.fixture
def registry(tmp_path):
    """A registry holding v1 (model a) and v2 (model b, the champion)."""
    prod = str(tmp_path / "prod")
    promote(fake_model(tmp_path / "a", "a"), prod, "r1")
    promote(fake_model(tmp_path / "b", "b"), prod, "r2")
    return prod


def tbpipe(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_promotions_add_versions_and_move_champion(registry):
    record = publish.read_record(registry)
    assert record["aliases"] == {"champion": "v2"} and record["current"]["version"] == "v2"
    assert [(h["version"], h["parent"]) for h in record["history"]] == [("v1", ""),
                                                                       ("v2", "v1")]
    assert sorted(publish.complete_versions(registry)) == ["v1", "v2"]


def test_rollback_moves_champion_back_nothing_copied_or_lost(registry, tmp_path, capsys):
    before = snapshot(registry)
    code, out, _ = tbpipe(capsys, "models", "rollback", registry, "--to", "v1",
                          "--reason", "v2 mislabels 7s")
    assert code == 0 and out.splitlines() == [
        f"champion: v2 -> v1 in {registry}",
        f"serving: {registry}/serving -> v1/saved_model"]
    assert publish.current_model(registry) == f"{registry}/v1"
    after = snapshot(registry)
    assert {k: v for k, v in after.items() if k != "promotion.json"} == {
        k: v for k, v in before.items() if k != "promotion.json"}
    record = publish.read_record(registry)
    assert record["aliases"]["champion"] == "v1" and len(record["history"]) == 2
    assert record["moves"][-1]["note"] == "v2 mislabels 7s"
    assert (record["moves"][-1]["from"], record["moves"][-1]["to"]) == ("v2", "v1")
    promote(fake_model(tmp_path / "c", "c"), registry, "r3")  # the next one follows v1
    record = publish.read_record(registry)
    assert record["current"]["version"] == "v3" and record["current"]["parent"] == "v1"


def test_models_list_show_and_alias(registry, capsys):
    code, out, _ = tbpipe(capsys, "models", "list", registry, "--output", "json")
    listed = json.loads(out)
    assert code == 0 and listed["aliases"] == {"champion": "v2"}
    assert [(v["version"], v["aliases"], v["parent"]) for v in listed["versions"]] == [
        ("v2", ["champion"], "v1"), ("v1", [], "")]
    code, out, _ = tbpipe(capsys, "models", "list", registry)
    assert out.splitlines()[0].split() == ["version", "aliases", "promoted", "at", "run",
                                           "accuracy", "blessed", "parent"]
    assert out.splitlines()[1].split()[:2] == ["v2", "champion"]

    assert tbpipe(capsys, "models", "alias", registry, "staging", "v1")[0] == 0
    code, out, _ = tbpipe(capsys, "models", "alias", registry, "staging")
    assert out.splitlines() == [f"staging -> v1: {registry}/v1"]
    code, out, _ = tbpipe(capsys, "models", "alias", registry, "champion")
    assert out.splitlines() == [f"champion -> v2: {registry}/v2",
                                f"serving: {registry}/serving -> v2/saved_model"]
    code, out, _ = tbpipe(capsys, "models", "show", registry, "staging")
    shown = json.loads(out)
    assert shown["version"] == "v1" and shown["aliases"] == ["staging"]
    assert shown["entry"]["run"] == "r1" and shown["blessing"] is None
    assert publish.read_record(registry)["aliases"] == {"champion": "v2", "staging": "v1"}


@pytest.mark.parametrize("argv, line", [
    (["rollback", "PROD", "--to", "v9"], "v9: not a complete version of PROD (it holds: v1, "
                                         "v2)"),
    (["alias", "PROD", "Bad Name", "v1"], "'Bad Name': an alias is lower-case letters"),
    (["show", "PROD", "v7"], "v7: not a version or alias of PROD"),
    (["alias", "PROD", "staging"], "staging: no such alias in PROD"),
    (["list", "EMPTY"], "EMPTY: holds no promoted version"),
])
def test_bad_requests_are_one_line_and_change_nothing(registry, tmp_path, capsys, argv, line):
    before = snapshot(registry)
    empty = str(tmp_path / "empty")
    argv = [a.replace("PROD", registry).replace("EMPTY", empty) for a in argv]
    code, _, err = tbpipe(capsys, "models", *argv)
    want = line.replace("PROD", registry).replace("EMPTY", empty)
    assert code == 1 and err.startswith(f"tbpipe: error: {want}") and err.count("\n") == 1, err
    assert snapshot(registry) == before


def test_an_unfinished_version_cannot_be_champion(registry):
    publish.storage.create_bytes(f"{registry}/v3/{publish.PARTIAL_MARK}", b"")
    with pytest.raises(InputError, match="v3: not a complete version"):
        publish.move_alias(registry, "champion", "v3")


def test_two_promotions_at_once_end_whole_with_champion_on_one(tmp_path):
    """Two processes (spawned: no state shared but the disk), released together."""
    import multiprocessing

    prod = str(tmp_path / "prod")
    models = [fake_model(tmp_path / f"m{i}", f"m{i}") for i in range(2)]
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(2)
    processes = [spawn.Process(target=promote_together, args=(start, models[i], prod, f"r{i}"))
                 for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    record = publish.read_record(prod)
    assert [h["version"] for h in record["history"]] == ["v1", "v2"]
    assert record["aliases"]["champion"] == "v2" == record["current"]["version"]
    assert record["history"][1]["parent"] == "v1"
    for entry in record["history"]:
        assert snapshot(f"{prod}/{entry['version']}") == snapshot(
            str(tmp_path / entry["run"].replace("r", "m")))


def test_a_kill_at_every_call_of_a_promotion_with_its_blessing_leaves_versions_whole(
        tmp_path, monkeypatch):
    """As the reliability tests, with the blessing and version.json a real promotion adds."""
    from tbpipe.components.common import storage
    from tests.reliability.test_production import WRAPPED, Killed

    prod = str(tmp_path / "prod")
    model = fake_model(tmp_path / "a", "a")
    extras = {publish.BLESSING_FILE: b'{"passed": true}'}

    def promote_blessed(run):
        target = publish.check_target(prod)
        with publish.promotion_lock(target) as lease:
            publish.publish(model, target, {"run": run}, lease, extras=extras)

    real = {name: getattr(storage, name) for name in WRAPPED}
    count, kill_at = [0], [10**9]

    def dying(name):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] > kill_at[0]:
                raise Killed(name)
            return real[name](*args, **kwargs)
        return call

    for name in WRAPPED:
        monkeypatch.setattr(storage, name, dying(name))
    promote_blessed("r0")
    count[0] = 0
    promote_blessed("clean")
    for at in range(count[0]):
        count[0], kill_at[0] = 0, at
        with pytest.raises(Killed):
            promote_blessed(f"killed{at}")
        kill_at[0] = 10**9
        record = publish.read_record(prod)
        versions = publish.complete_versions(prod)
        assert record["aliases"]["champion"] in versions, at
        for version, entry in versions.items():
            files = set(storage.list_files(f"{prod}/{version}"))
            assert files == set(entry["files"]) >= {"blessing.json", "version.json"}, at
        promote_blessed(f"next{at}")
        assert publish.read_record(prod)["current"]["run"] == f"next{at}"
