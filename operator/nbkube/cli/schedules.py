"""`nbkube schedule create|list|suspend|resume|trigger`: NotebookSchedules, notebooks on a cron schedule.

`create NOTEBOOK.ipynb --env ENV --cron '0 6 * * *'` uploads the notebook (outputs stripped) and the
--file inputs as a ConfigMap named after the schedule, as `nbkube run` does, creates the
NotebookSchedule whose runs read it, and gives the ConfigMap an ownerReference to the schedule (deleted
with it). `trigger` starts one run now from the schedule's template, as `kubectl create job
--from=cronjob/NAME` does: owned by the schedule, named `<schedule>-manual-<suffix>`.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbkube import API_VERSION
from nbkube.cli.errors import EXIT_OK, CliError, UsageError, invalid_spec
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options
from nbkube.cli.run import (
    CREATED_BY_LABEL,
    MAX_NAME,
    add_run_spec_options,
    build_spec,
    check_name,
    config_map_key,
    config_map_manifest,
    create_owning,
    follow,
    notebook_payload,
)
from nbkube.cli.runs import age
from nbkube.cli.tables import format_table
from nbkube.cli.uploads import binary_data, check_size, collect

SCHEDULE_TOO_BIG_HINT = (
    "put it in the results repository and give the schedule's runTemplate spec.notebook.repoPath"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedule = subparsers.add_parser(
        "schedule",
        help="notebooks on a cron schedule (NotebookSchedule, as a CronJob)",
        description="A NotebookSchedule creates a NotebookRun at each time of a cron schedule, with "
        "CronJob's rules: a time zone, suspend, a starting deadline, a concurrency policy and history "
        "limits.",
    )
    actions = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="upload a notebook and run it on a cron schedule",
        description="Uploads NOTEBOOK as a ConfigMap the schedule owns and creates a NotebookSchedule "
        "that runs it in ENV at each time of CRON.",
    )
    create.add_argument("notebook", type=Path, metavar="NOTEBOOK.ipynb")
    create.add_argument("--env", required=True, help="the NotebookEnvironment (in the schedule's namespace)")
    create.add_argument(
        "--cron",
        required=True,
        metavar="EXPR",
        help="cron syntax as CronJob takes it: '0 6 * * *' (minute hour day month weekday) or @daily, ...",
    )
    create.add_argument(
        "--time-zone", metavar="ZONE", help="an IANA time zone, e.g. Europe/Berlin (default UTC)"
    )
    create.add_argument("--name", help="the schedule's name (default: the notebook's name)")
    create.add_argument(
        "--scheduled-time-parameter",
        metavar="NAME",
        help="a parameter each run gets with its scheduled time (ISO 8601, in the schedule's time zone)",
    )
    create.add_argument(
        "--concurrency-policy",
        choices=["Allow", "Forbid", "Replace"],
        help="when a run is still active at the next time (default Allow)",
    )
    create.add_argument(
        "--starting-deadline", type=int, metavar="S", help="skip a time not started within S seconds"
    )
    create.add_argument("--successful-history", type=int, metavar="N", help="succeeded runs kept (default 3)")
    create.add_argument("--failed-history", type=int, metavar="N", help="failed runs kept (default 1)")
    create.add_argument("--suspend", action="store_true", help="create it suspended")
    add_run_spec_options(create, "each run", "each run")
    add_cluster_options(create)
    create.set_defaults(handler=cmd_create)

    listing = actions.add_parser("list", help="a table of schedules")
    add_cluster_options(listing)
    listing.set_defaults(handler=cmd_list)

    for action, help_text in (
        ("suspend", "create no more runs (running ones go on)"),
        ("resume", "create runs again (the most recent missed time runs at once, as CronJob does)"),
    ):
        sub = actions.add_parser(action, help=help_text)
        sub.add_argument("name", metavar="NAME")
        add_cluster_options(sub)
        sub.set_defaults(handler=cmd_suspend if action == "suspend" else cmd_resume)

    trigger = actions.add_parser(
        "trigger",
        help="start one run now from the schedule's template",
        description="Creates one NotebookRun now from the schedule's template (as `kubectl create job "
        "--from=cronjob/NAME`), owned by the schedule; its scheduled time is now.",
    )
    trigger.add_argument("name", metavar="NAME")
    trigger.add_argument("--follow", action="store_true", help="follow the run until it ends")
    add_cluster_options(trigger)
    trigger.set_defaults(handler=cmd_trigger)


def default_name(notebook: Path) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", notebook.stem.lower()).strip("-") or "notebook"
    return stem[:MAX_NAME].rstrip("-")


def schedule_spec(args: argparse.Namespace, run_spec: dict[str, Any]) -> dict[str, Any]:
    """The NotebookSchedule spec, checked against the API model and the cron parser before anything is
    created (the operator's test-only seconds field aside)."""
    from pydantic import ValidationError

    from nbkube.api.schedule import NotebookScheduleSpec
    from nbkube.schedule.cron import CronSchedule, InvalidSchedule

    spec: dict[str, Any] = {"schedule": args.cron, "runTemplate": {"spec": run_spec}}
    for option, field in (
        ("time_zone", "timeZone"),
        ("scheduled_time_parameter", "scheduledTimeParameter"),
        ("concurrency_policy", "concurrencyPolicy"),
        ("starting_deadline", "startingDeadlineSeconds"),
        ("successful_history", "successfulRunsHistoryLimit"),
        ("failed_history", "failedRunsHistoryLimit"),
    ):
        value = getattr(args, option)
        if value is not None:
            spec[field] = value
    if args.suspend:
        spec["suspend"] = True
    try:
        model = NotebookScheduleSpec.model_validate(spec)
        CronSchedule.parse(model.schedule, model.time_zone, seconds_field=True)
    except ValidationError as exc:
        raise invalid_spec("schedule", exc) from None
    except InvalidSchedule as exc:
        raise UsageError(f"invalid schedule: {exc}") from None
    return spec


def schedule_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NotebookSchedule",
        "metadata": {"name": name, "labels": {CREATED_BY_LABEL: "nbkube-cli"}},
        "spec": spec,
    }


def cmd_create(args: argparse.Namespace) -> int:
    name = (
        check_name(args.name, "schedule")
        if args.name
        else check_name(default_name(args.notebook), "schedule")
    )
    key = config_map_key(args.notebook)
    text = notebook_payload(args.notebook, key, SCHEDULE_TOO_BIG_HINT)
    uploads = collect(args.files, args.notebook, {key})
    check_size(args.notebook, key, text, uploads)
    spec = schedule_spec(args, build_spec(args, name, key, uploads))
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        if not kube.environment_exists(args.env):
            raise CliError(
                f"NotebookEnvironment {args.env!r} not found in namespace {kube.namespace} "
                f"(kubectl get nbenv -n {kube.namespace} lists them)"
            )
        config_map = config_map_manifest(name, key, text, binary_data(uploads))
        create_owning(
            kube, config_map, lambda: kube.create_schedule(schedule_manifest(name, spec)), "schedule"
        )
        zone = f" ({args.time_zone})" if args.time_zone else " (UTC)"
        print(f"notebookschedule {kube.namespace}/{name} created: {args.cron!r}{zone}")
        print(f"its runs are named {name}-<time> (nbkube get); one now: nbkube schedule trigger {name}")
        return EXIT_OK
    finally:
        kube.close()


def schedule_row(schedule: dict[str, Any]) -> list[str]:
    spec, status = schedule.get("spec") or {}, schedule.get("status") or {}
    ready: dict[str, Any] = _ready(schedule)
    return [
        schedule["metadata"]["name"],
        spec.get("schedule", "-"),
        spec.get("timeZone") or "UTC",
        "true" if spec.get("suspend") else "false",
        str(len(status.get("active") or [])),
        age(status.get("lastScheduleTime")) if status.get("lastScheduleTime") else "-",
        status.get("nextScheduleTime") or "-",
        ready.get("reason") or "-",
        age(schedule["metadata"].get("creationTimestamp")),
    ]


def _ready(schedule: dict[str, Any]) -> dict[str, Any]:
    conditions = (schedule.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})


HEADER = ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "NEXT", "STATUS", "AGE"]


def cmd_list(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        schedules = kube.list_schedules()
    finally:
        kube.close()
    if not schedules:
        print(f"no NotebookSchedules in namespace {kube.namespace}", file=sys.stderr)
        return EXIT_OK
    schedules.sort(key=lambda s: s["metadata"]["name"])
    print(format_table([HEADER, *[schedule_row(s) for s in schedules]]))
    for schedule in schedules:
        ready = _ready(schedule)
        if ready.get("status") == "False":
            print(
                f"{schedule['metadata']['name']}: {ready.get('reason')}: {ready.get('message')}",
                file=sys.stderr,
            )
    return EXIT_OK


def _set_suspend(args: argparse.Namespace, suspend: bool) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        kube.patch_schedule(args.name, {"spec": {"suspend": suspend}})
    finally:
        kube.close()
    print(f"notebookschedule {kube.namespace}/{args.name} {'suspended' if suspend else 'resumed'}")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    return _set_suspend(args, True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _set_suspend(args, False)


def manual_run(schedule: dict[str, Any], at: datetime) -> dict[str, Any]:
    """One run of `schedule` now, from its template, as the operator builds scheduled ones."""
    from pydantic import ValidationError

    from nbkube.api.schedule import NotebookScheduleSpec
    from nbkube.schedule import plan
    from nbkube.schedule.cron import CronSchedule, InvalidSchedule

    name = schedule["metadata"]["name"]
    try:
        spec = NotebookScheduleSpec.model_validate(schedule.get("spec") or {})
        cron = CronSchedule.parse(spec.schedule, spec.time_zone, seconds_field=True)
    except (ValidationError, InvalidSchedule) as exc:
        raise CliError(f"NotebookSchedule {name!r} is invalid, no run started: {exc}") from None
    return plan.run_manifest(schedule, spec, cron, at, plan.manual_run_name(name), manual=True)


def cmd_trigger(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        schedule = kube.find_schedule(args.name)
        run = kube.create_run(manual_run(schedule, datetime.now(UTC)))
        name = run["metadata"]["name"]
        print(f"notebookrun {kube.namespace}/{name} created from notebookschedule {args.name}", flush=True)
        if args.follow:
            return follow(kube, name)
        return EXIT_OK
    finally:
        kube.close()
