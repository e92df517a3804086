"""``tbpipe schedule create|list|delete``: recurring runs of the pipeline on Kubeflow Pipelines.

``create`` uploads the pipeline as ``tbpipe submit`` does (the same parameter flags,
``--params-file``, placement flags, ``--sweep`` and ``--notify``; only the parameters given
are sent) and creates a KFP recurring run in ``--experiment``: ``--cron`` (5 fields, or
6 with seconds first as KFP's scheduler reads them) or ``--every`` (an interval), at most
``--max-concurrency`` runs at once, and with ``--catch-up`` the runs missed while the
schedule was paused or the cluster was down are started afterwards (KFP's ``no_catchup``
false; default: they are skipped). KFP names each run (its job name): runs never share a log
folder, so ``--run-name`` is refused. ``list`` shows the schedules, ``delete`` removes one by
id or name. Every server error is one line; ``--output json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re

from tbpipe.components.common.errors import InputError, SettingError, TbpipeError
from tbpipe.pipelines.cli.flags import (
    add_compile_arguments,
    add_connection_arguments,
    add_param_arguments,
    add_sweep_arguments,
)
from tbpipe.pipelines.cli.output import add_output_argument, emit, result_output, wants_json
from tbpipe.pipelines.runners.kfp_client import (
    DEFAULT_REQUEST_TIMEOUT_S,
    KfpConnection,
    calling,
    check_timeout,
)

#: KFP's bounds on a recurring run's ``max_concurrency``.
MAX_CONCURRENCY = (1, 10)
_INTERVAL = re.compile(r"^([0-9]+)([smhd]?)\Z")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+\Z")


@dataclasses.dataclass(frozen=True)
class Trigger:
    """When a schedule starts runs: ``cron`` (KFP's 6 fields) or ``interval_s``, not both."""

    cron: str = ""
    interval_s: int = 0

    def describe(self) -> str:
        """``cron 0 0 3 * * *`` or ``every 3600s``."""
        return f"cron {self.cron}" if self.cron else f"every {self.interval_s}s"


def parse_cron(text: str) -> str:
    """A cron expression as KFP's scheduler reads it (6 fields, seconds first).

    5 fields (minute hour day month weekday, as crontab) get ``0`` seconds in front.
    SettingError (one line) for anything else.
    """
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(_CRON_FIELD.match(field) for field in fields):
        raise SettingError("--cron", text, "give 5 fields (minute hour day month weekday, e.g. "
                                           "'0 3 * * *') or 6 with seconds first")
    return " ".join(fields)


def parse_interval(text: str) -> int:
    """``--every 6h`` -> 21600 seconds (s, m, h, d or plain seconds); SettingError if not."""
    match = _INTERVAL.match(text.strip())
    seconds = int(match[1]) * _UNIT_S[match[2]] if match else 0
    if seconds < 1:
        raise SettingError("--every", text, "give a positive interval like 3600, 30m, 6h or 1d")
    return seconds


def trigger_from_args(args: argparse.Namespace) -> Trigger:
    """The Trigger of ``--cron`` / ``--every`` (exactly one); SettingError/InputError."""
    if bool(args.cron) == bool(args.every):
        raise InputError("schedule create needs --cron EXPR or --every INTERVAL (one of them)")
    return Trigger(cron=parse_cron(args.cron)) if args.cron else \
        Trigger(interval_s=parse_interval(args.every))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``schedule`` with ``create``, ``list`` and ``delete``."""
    cmd = subparsers.add_parser(
        "schedule", help="recurring runs on Kubeflow Pipelines (create, list, delete)",
        description="Recurring runs of the pipeline on Kubeflow Pipelines.")
    actions = cmd.add_subparsers(dest="action", required=True, parser_class=type(cmd))
    create = actions.add_parser(
        "create", help="upload the pipeline and run it on a schedule",
        description="Compile (or take --package), upload and create a KFP recurring run. "
                    "The pipeline parameters are the flags of tbpipe run/submit.")
    add = create.add_argument
    add("--name", required=True, help="the schedule's name (KFP's recurring run name)")
    add("--cron", default=None, metavar="EXPR",
        help="when to run: cron, 5 fields ('0 3 * * *': 03:00 every day, the cluster's time "
             "zone) or KFP's 6 with seconds first")
    add("--every", default=None, metavar="INTERVAL",
        help="or run every INTERVAL: seconds, or 30m, 6h, 1d")
    add("--max-concurrency", type=int, default=1, metavar="N",
        help=f"runs of this schedule at once, {MAX_CONCURRENCY[0]} to {MAX_CONCURRENCY[1]} "
             "(default: 1)")
    add("--catch-up", action="store_true",
        help="start the runs missed while paused or down, one after another (default: skip "
             "them)")
    add("--start-time", default=None, metavar="RFC3339",
        help="no run before this time (e.g. 2026-01-01T00:00:00Z)")
    add("--end-time", default=None, metavar="RFC3339", help="no run after this time")
    add("--paused", action="store_true", help="create it disabled (enable it in the KFP UI)")
    add("--description", default=None, help="shown in the KFP UI")
    add_connection_arguments(create)
    add_output_argument(create)
    add_param_arguments(create)
    add_compile_arguments(create)
    add_sweep_arguments(create)
    create.set_defaults(handler=run_schedule_create)

    listing = actions.add_parser("list", help="the recurring runs, newest first")
    connection_only(listing)
    listing.add_argument("--experiment", default=None, help="only this experiment's")
    add_output_argument(listing)
    listing.set_defaults(handler=run_schedule_list)

    delete = actions.add_parser("delete", help="delete a recurring run (its runs stay)")
    delete.add_argument("schedule", metavar="ID_OR_NAME", help="its id, or its name")
    connection_only(delete)
    add_output_argument(delete)
    delete.set_defaults(handler=run_schedule_delete)


def connection_only(parser: argparse.ArgumentParser) -> None:
    """``--endpoint``, ``--namespace``, ``--token-file``, ``--request-timeout``."""
    add = parser.add_argument
    add("--endpoint", default=None, metavar="URL",
        help="KFP API address (default: $KFP_HOST, then kfp.Client's own lookup)")
    add("--namespace", default=None, help="KFP namespace (multi-user deployments)")
    add("--token-file", default=None, help="file holding a bearer token (or set $KFP_TOKEN)")
    add("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, metavar="SECONDS",
        help=f"give up on a request unanswered this long (default: "
             f"{DEFAULT_REQUEST_TIMEOUT_S:g})")


def connect(args: argparse.Namespace) -> KfpConnection:
    """The KFP connection the flags name."""
    check_timeout(args.request_timeout)
    return KfpConnection.open(args.endpoint or os.environ.get("KFP_HOST"), args.namespace,
                              token_file=args.token_file, token=os.environ.get("KFP_TOKEN"),
                              timeout=args.request_timeout)


def run_schedule_create(args: argparse.Namespace) -> int:
    """``tbpipe schedule create``: upload, then create the recurring run."""
    from tbpipe.pipelines.cli.submit import upload_for_run

    with result_output(args) as out:
        trigger = trigger_from_args(args)  # before anything is uploaded
        low, high = MAX_CONCURRENCY
        if not low <= args.max_concurrency <= high:
            raise SettingError("--max-concurrency", args.max_concurrency,
                               f"must be {low} to {high} (KFP's bounds)")
        up = upload_for_run(args, doing="schedule create", one_run=False)
        kfp = up.kfp
        experiment_id = kfp.experiment(up.experiment)
        with calling(kfp.host, f"creating recurring run {args.name!r}", kfp.timeout):
            made = kfp.client.create_recurring_run(
                experiment_id, args.name, description=args.description,
                start_time=args.start_time, end_time=args.end_time,
                interval_second=trigger.interval_s or None,
                cron_expression=trigger.cron or None, max_concurrency=args.max_concurrency,
                no_catchup=not args.catch_up, params=up.arguments,
                pipeline_id=up.target.pipeline_id, version_id=up.target.version_id,
                enabled=not args.paused, pipeline_root=args.pipeline_root,
                service_account=args.service_account)
        result = {"recurring_run_id": made.recurring_run_id, "name": args.name,
                  "experiment": up.experiment, "pipeline": up.pipeline,
                  "version": up.target.version_name, "trigger": trigger.describe(),
                  "max_concurrency": args.max_concurrency, "catch_up": args.catch_up,
                  "enabled": not args.paused}
        if wants_json(args):
            emit(out, result)
        else:
            print(f"schedule {args.name} ({made.recurring_run_id}): {trigger.describe()} in "
                  f"experiment {up.experiment}, at most {args.max_concurrency} at once, "
                  f"{'catching up' if args.catch_up else 'skipping'} missed runs"
                  f"{', paused' if args.paused else ''}")
    return 0


def schedule_row(recurring: object) -> dict:
    """One recurring run (kfp's client model) as the row ``list`` shows."""
    trigger = recurring.trigger
    cron = trigger.cron_schedule.cron if trigger and trigger.cron_schedule else None
    interval = (trigger.periodic_schedule.interval_second
                if trigger and trigger.periodic_schedule else None)
    return {"recurring_run_id": recurring.recurring_run_id, "name": recurring.display_name,
            "trigger": f"cron {cron}" if cron else f"every {interval}s" if interval else "",
            "status": str(recurring.status or recurring.mode or ""),
            "max_concurrency": int(recurring.max_concurrency or 0) or None,
            "catch_up": not recurring.no_catchup,
            "experiment_id": recurring.experiment_id,
            "created_at": recurring.created_at.isoformat() if recurring.created_at else None}


def list_schedules(kfp: KfpConnection, experiment_id: str | None = None,
                   name: str | None = None) -> list[dict]:
    """Every recurring run (all pages), newest first; only those named ``name`` if given."""
    flt = (json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name",
                                       "stringValue": name}]}) if name else None)
    rows, token = [], ""
    while True:
        with calling(kfp.host, "listing recurring runs", kfp.timeout):
            page = kfp.client.list_recurring_runs(
                page_token=token, page_size=100, sort_by="created_at desc",
                experiment_id=experiment_id, namespace=kfp.namespace, filter=flt)
        rows += [schedule_row(item) for item in page.recurring_runs or []]
        token = page.next_page_token or ""
        if not token:
            return rows


def run_schedule_list(args: argparse.Namespace) -> int:
    """``tbpipe schedule list``."""
    with result_output(args) as out:
        kfp = connect(args)
        experiment_id = kfp.experiment(args.experiment) if args.experiment else None
        rows = list_schedules(kfp, experiment_id)
        if wants_json(args):
            emit(out, {"schedules": rows})
        elif not rows:
            print("no schedules")
        else:
            for row in rows:
                print(f"{row['recurring_run_id']}  {row['name']}  {row['trigger']}  "
                      f"{row['status']}  max {row['max_concurrency']}  "
                      f"{'catch-up' if row['catch_up'] else 'no catch-up'}")
    return 0


def run_schedule_delete(args: argparse.Namespace) -> int:
    """``tbpipe schedule delete ID_OR_NAME``: by id, else the one schedule of that name."""
    with result_output(args) as out:
        kfp = connect(args)
        named = list_schedules(kfp, name=args.schedule)
        if len(named) > 1:
            ids = ", ".join(row["recurring_run_id"] for row in named)
            raise TbpipeError(f"{len(named)} schedules are named {args.schedule!r} ({ids}): "
                              "delete one by its id")
        schedule_id = named[0]["recurring_run_id"] if named else args.schedule
        with calling(kfp.host, f"deleting recurring run {args.schedule!r}", kfp.timeout):
            kfp.client.delete_recurring_run(schedule_id)
        if wants_json(args):
            emit(out, {"deleted": schedule_id})
        else:
            print(f"deleted schedule {args.schedule} ({schedule_id}); its runs stay")
    return 0
