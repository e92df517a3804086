"""``tbpipe models``: a registry's versions, aliases and what serves its champion.

Sub-commands: list, show, rollback, alias, serving-manifest.

The registry is a ``--promote-to`` folder (local, gs://, s3://): immutable ``vN/`` versions
and ``promotion.json``, whose aliases name versions (``champion``: what production serves).
Rollback and alias move a name under the registry's lock; nothing is copied or deleted. The
served path follows ``champion``: locally the link ``{registry}/serving`` (moved with the
pointer); on any store, with ``--inference-service NAMESPACE/NAME``, the KServe
InferenceService's ``storageUri`` (object stores) or its pods (a local registry on a volume).
A version also registered in MLflow (its entry's ``mlflow_uri``, or ``--mlflow-uri``) has
the same alias moved there (``mlflow_registry.follow_alias``), or a one-line warning.
"""

from __future__ import annotations

import argparse
import json

import yaml

from tbpipe.components.common import storage
from tbpipe.components.common.errors import InputError, TbpipeError
from tbpipe.components.promotion import inference_service, mlflow_registry, publish

OUTPUTS = ("table", "json")
COLUMNS = ("version", "aliases", "promoted at", "run", "accuracy", "blessed", "parent")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` and its sub-commands."""
    cmd = subparsers.add_parser("models", help="a --promote-to registry: list, show, "
                                               "rollback, alias its versions")
    sub = cmd.add_subparsers(dest="models_command", required=True, metavar="COMMAND",
                             parser_class=type(cmd))  # tbpipe's one-line errors
    listing = sub.add_parser("list", help="the registry's versions, newest first")
    listing.add_argument("uri", metavar="URI", help="the registry (--promote-to)")
    listing.add_argument("--output", choices=OUTPUTS, default=OUTPUTS[0],
                         help="table (default) or json: one JSON object on stdout")
    listing.set_defaults(handler=list_versions)
    show = sub.add_parser("show", help="one version's entry and blessing")
    show.add_argument("uri", metavar="URI")
    show.add_argument("version", metavar="VERSION", help="vN, or an alias (champion)")
    show.set_defaults(handler=show_version)
    rollback = sub.add_parser("rollback", help="point champion back at an earlier version")
    rollback.add_argument("uri", metavar="URI")
    rollback.add_argument("--to", required=True, metavar="VERSION", help="vN")
    rollback.add_argument("--reason", default="", help="why (recorded)")
    _service_flag(rollback)
    _mlflow_flag(rollback)
    rollback.set_defaults(handler=rollback_champion)
    alias = sub.add_parser("alias", help="print where an alias points (and what to serve), "
                                         "or move it to VERSION")
    alias.add_argument("uri", metavar="URI")
    alias.add_argument("name", metavar="NAME", help="e.g. champion, staging")
    alias.add_argument("version", metavar="VERSION", nargs="?", default="",
                       help="vN to point NAME at; omitted: print where it points")
    _service_flag(alias)
    _mlflow_flag(alias)
    alias.set_defaults(handler=set_alias)
    manifest = sub.add_parser("serving-manifest", help="print a KServe InferenceService "
                                                       "serving the champion (YAML)")
    manifest.add_argument("uri", metavar="URI")
    manifest.add_argument("--name", default="tbpipe-classifier",
                          help="the InferenceService's name (default tbpipe-classifier)")
    manifest.add_argument("--namespace", default="", help="its namespace (default: none "
                                                          "written, kubectl's)")
    manifest.add_argument("--pvc", default="", metavar="CLAIM[/PATH]",
                          help="a local registry: the claim (and the path in it) holding "
                               "URI; storageUri names its serving link")
    manifest.set_defaults(handler=print_serving_manifest)


def _service_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inference-service", default="", metavar="NAMESPACE/NAME",
                        help="also point this KServe InferenceService at the champion "
                             "(its storageUri; its pods for a local registry)")


def _mlflow_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mlflow-uri", default="", metavar="URI",
                        help="also move the alias in this MLflow tracking server (default: "
                             "the one the version was registered in, if any)")


def _mlflow_uri(flag: str, record: dict, versions: tuple[str, ...]) -> str:
    """``flag``, else the MLflow server the first of ``versions`` recorded (``mlflow_uri``)."""
    if flag:
        return flag
    entries = {h.get("version"): h for h in record["history"] if isinstance(h, dict)}
    for version in versions:
        uri = (entries.get(version) or {}).get("mlflow_uri")
        if uri:
            return str(uri)
    return ""


def _registry(uri: str) -> tuple[str, dict, dict[str, dict]]:
    target = publish.check_target(uri)
    record = publish.read_record(target)
    versions = publish.complete_versions(target)
    if not versions:
        raise InputError(f"{uri}: holds no promoted version; promote with tbpipe run "
                         "--promote-to first")
    return target, record, versions


def _serving_lines(target: str, version: str) -> list[str]:
    """What serves ``version`` (the champion): the local link, or the storageUri to set."""
    link = publish.serving_link(target)
    if link:
        linked = publish.linked_version(target)
        lag = "" if linked == version else (
            f" (behind {publish.CHAMPION} {version}: a command was interrupted; the next "
            "promotion or alias move re-links it)")
        return [f"serving: {link} -> {linked or '-'}/{publish.SAVED_MODEL}{lag}"]
    return [f"serve (KServe storageUri): {publish.served_uri(target, version)}"]


def _point(ref: inference_service.ServiceRef | None, target: str, version: str,
           moved: str) -> None:
    """Point the InferenceService ``ref`` (if any) at ``version``; print what changed.

    ``moved`` starts the error line when the alias has already moved (what to rerun ends it).
    """
    if ref is None:
        return
    try:
        print(inference_service.follow(ref, target, version))
    except TbpipeError as exc:
        raise type(exc)(f"{moved}{exc}; run tbpipe models alias {target} "
                        f"{publish.CHAMPION} --inference-service {ref} to try again") from None


def list_versions(args: argparse.Namespace) -> int:
    """Print the versions (newest first) with their aliases, or one JSON object."""
    target, record, versions = _registry(args.uri)
    names: dict[str, list[str]] = {}
    for alias, version in sorted(record["aliases"].items()):
        names.setdefault(version, []).append(alias)
    rows = []
    for version in sorted(versions, key=lambda v: -int(v[1:])):
        entry = versions[version]
        accuracy = (entry.get("new") or {}).get("accuracy")
        rows.append({"version": version, "aliases": names.get(version, []),
                     "promoted_at": entry.get("promoted_at", ""), "run": entry.get("run", ""),
                     "accuracy": accuracy, "blessed": entry.get("blessed"),
                     "forced": bool(entry.get("forced")), "parent": entry.get("parent", ""),
                     "uri": storage.join(target, version)})
    if args.output == "json":
        print(json.dumps({"registry": target, "aliases": record["aliases"], "versions": rows},
                         sort_keys=True))
        return 0
    cells = [COLUMNS] + [(
        r["version"], ",".join(r["aliases"]) or "-", r["promoted_at"] or "-", r["run"] or "-",
        f"{r['accuracy']:.4f}" if isinstance(r["accuracy"], int | float) else "-",
        "forced" if r["forced"] else {True: "yes", False: "no"}.get(r["blessed"], "-"),
        r["parent"] or "-") for r in rows]
    widths = [max(len(c) for c in column) for column in zip(*cells, strict=True)]
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _resolve(version: str, record: dict, versions: dict[str, dict], uri: str) -> str:
    version = record["aliases"].get(version, version)
    if version not in versions:
        held = ", ".join(sorted(versions, key=lambda v: int(v[1:])))
        raise InputError(f"{version}: not a version or alias of {uri} (versions: {held}; "
                         f"aliases: {', '.join(sorted(record['aliases'])) or 'none'})")
    return version


def show_version(args: argparse.Namespace) -> int:
    """Print one version's registry entry, its aliases and its blessing as JSON."""
    target, record, versions = _registry(args.uri)
    version = _resolve(args.version, record, versions, args.uri)
    folder = storage.join(target, version)
    blessing_uri = storage.join(folder, publish.BLESSING_FILE)
    blessing = (json.loads(storage.read_bytes(blessing_uri))
                if storage.exists(blessing_uri) else None)
    aliases = sorted(a for a, v in record["aliases"].items() if v == version)
    print(json.dumps({"version": version, "uri": folder,
                      "serve": publish.served_uri(target, version),
                      "aliases": aliases, "entry": versions[version], "blessing": blessing},
                     indent=2, sort_keys=True))
    return 0


def rollback_champion(args: argparse.Namespace) -> int:
    """Point ``champion`` at ``--to``; nothing is copied or lost."""
    return _move(args.uri, publish.CHAMPION, args.to, args.reason or "rollback",
                 args.inference_service, args.mlflow_uri)


def set_alias(args: argparse.Namespace) -> int:
    """Move alias NAME to VERSION, or print where it points (and point a service at it)."""
    if args.inference_service:
        if args.name != publish.CHAMPION:
            raise InputError(f"--inference-service: serves {publish.CHAMPION}, not "
                             f"{args.name}; move {publish.CHAMPION} to serve another version")
    if args.version:
        return _move(args.uri, args.name, args.version, "tbpipe models alias",
                     args.inference_service, args.mlflow_uri)
    target, record, _ = _registry(args.uri)
    if args.name not in record["aliases"]:
        raise InputError(f"{args.name}: no such alias in {args.uri} (aliases: "
                         f"{', '.join(sorted(record['aliases'])) or 'none'})")
    version = record["aliases"][args.name]
    ref = (inference_service.prepare(args.inference_service, target)
           if args.inference_service else None)
    print(f"{args.name} -> {version}: {storage.join(target, version)}")
    if args.name == publish.CHAMPION:
        for line in _serving_lines(target, version):
            print(line)
    _point(ref, target, version, "")
    return 0


def _move(uri: str, alias: str, version: str, note: str, service: str = "",
          mlflow_uri: str = "") -> int:
    """Move ``alias`` to ``version``; then MLflow's alias and the InferenceService follow."""
    if mlflow_uri and not mlflow_uri.startswith(mlflow_registry.TRACKING_SCHEMES):
        raise InputError(f"--mlflow-uri {mlflow_uri}: not an MLflow tracking server; use "
                         "http(s)://HOST:PORT")
    target = publish.check_target(uri)
    # checked before anything moves: a bad value, a store KServe cannot read, no such service
    ref = inference_service.prepare(service, target) if service else None
    before = publish.read_record(target)["aliases"].get(alias, "")
    record = publish.move_alias(uri, alias, version, note)
    print(f"{alias}: {before or 'none'} -> {version} in {target}")
    if alias == publish.CHAMPION:
        for line in _serving_lines(target, version):
            print(line)
    # the server the version (else the one the alias left) was registered in, if any
    tracking = _mlflow_uri(mlflow_uri, record, (version, before))
    if tracking:
        print(mlflow_registry.follow_alias(tracking, target, alias, version), flush=True)
    if alias == publish.CHAMPION:
        _point(ref, target, version, f"{alias} moved to {version} in {target}, but ")
    return 0 if record["aliases"][alias] == version else 1


def print_serving_manifest(args: argparse.Namespace) -> int:
    """Print an InferenceService serving the champion, as YAML.

    On an object store it is pinned to the champion's version; for a local registry it names
    the serving link on the volume (``--pvc``), which follows the champion.
    """
    inference_service.check_name("--name", args.name)
    if args.namespace:
        inference_service.check_name("--namespace", args.namespace)
    target, record, _ = _registry(args.uri)
    version = record["aliases"].get(publish.CHAMPION, "")
    if not version:
        raise InputError(f"{args.uri}: no {publish.CHAMPION}; promote or move the alias first")
    uri = inference_service.storage_uri(target, version, args.pvc)
    manifest = inference_service.inference_service_manifest(args.name, args.namespace, uri,
                                                            version)
    print(yaml.safe_dump(manifest, sort_keys=False), end="")
    return 0
