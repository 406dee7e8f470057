"""What a NotebookSchedule does next, decided from its spec, its runs and the time: CronJob's rules
(pkg/controller/cronjob in Kubernetes), in plain functions that know nothing of kopf or the API.

- The scheduled times considered are those after the latest one a run was created for (or the
  schedule's creation), and after `now - startingDeadlineSeconds` when that is set; only the most
  recent of them can get a run: missed times (operator down, suspended, a Forbid run active) give at
  most one catch-up run, and none once the deadline has passed.
- Forbid with a run active creates nothing and leaves lastScheduleTime, so the time is still missed
  and runs when the active one ends, unless startingDeadlineSeconds has passed by then.
- Replace cancels the active runs (they end Cancelled, their partial results committed) and creates.
- A run's name is the schedule's and its scheduled time's (minutes since the epoch, as CronJob names
  Jobs; seconds for the test-only seconds field), so no scheduled time gets two runs whatever restarts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from nbkube import API_VERSION
from nbkube.api.common import parse_timestamp
from nbkube.api.schedule import NotebookScheduleSpec
from nbkube.api.states import TERMINAL_RUN_STATES, RunState
from nbkube.names import LABEL_MAX, label_value, shorten
from nbkube.schedule.cron import MAX_MISSED_COUNTED, CronSchedule

SCHEDULE_LABEL = "nbkube.io/schedule"
SCHEDULED_TIME_ANNOTATION = "nbkube.io/scheduled-time"
TRIGGER_ANNOTATION = "nbkube.io/schedule-trigger"  # "manual": created by `nbkube schedule trigger`
_MANUAL_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


class Action(StrEnum):
    WAIT = "wait"  # nothing due
    CREATE = "create"
    SKIP = "skip"  # due, but Forbid with a run active


@dataclass(frozen=True)
class Decision:
    action: Action
    scheduled: datetime | None = None  # the scheduled time a run is created (or skipped) for
    replace: list[str] = field(default_factory=list)  # active runs Replace cancels first
    too_many_missed: bool = False  # more than MAX_MISSED_COUNTED times since the last run
    next_time: datetime | None = None  # the next scheduled time after now (None when suspended)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC, to the second, as Kubernetes writes times."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    seconds = parse_timestamp(value)
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def decide(
    spec: NotebookScheduleSpec,
    cron: CronSchedule,
    *,
    created: datetime,
    last_schedule: datetime | None,
    now: datetime,
    active: list[str],
    existing: set[str],
    schedule_name: str,
) -> Decision:
    """What to do now. `active` are the schedule's unfinished runs, `existing` the names of all of its
    runs (a run already created for the due time means nothing is to be done)."""
    if spec.suspend:
        return Decision(Action.WAIT)
    next_time = cron.next_after(now)
    earliest = last_schedule or created
    if spec.starting_deadline_seconds is not None:
        earliest = max(earliest, now - timedelta(seconds=spec.starting_deadline_seconds))
    scheduled, count = cron.most_recent(earliest, now)
    if scheduled is None:
        return Decision(Action.WAIT, next_time=next_time)
    if run_name(schedule_name, scheduled, cron) in existing or scheduled == last_schedule:
        return Decision(Action.WAIT, next_time=next_time)
    too_many = count > MAX_MISSED_COUNTED
    if active and spec.concurrency_policy == "Forbid":
        return Decision(Action.SKIP, scheduled, too_many_missed=too_many, next_time=next_time)
    replace = list(active) if spec.concurrency_policy == "Replace" else []
    return Decision(Action.CREATE, scheduled, replace, too_many, next_time)


def run_name(schedule_name: str, scheduled: datetime, cron: CronSchedule) -> str:
    """`<schedule>-<minutes since the epoch>` (seconds with the seconds field), at most 63 characters:
    a long schedule name is shortened with a hash of all of it."""
    epoch = int(scheduled.timestamp())
    suffix = f"-{epoch if cron.seconds else epoch // 60}"
    return shorten(schedule_name, LABEL_MAX - len(suffix)) + suffix


def manual_run_name(schedule_name: str) -> str:
    """`<schedule>-manual-<5 random characters>`, for a run started by hand."""
    suffix = "-manual-" + "".join(secrets.choice(_MANUAL_ALPHABET) for _ in range(5))
    return shorten(schedule_name, LABEL_MAX - len(suffix)) + suffix


def run_manifest(
    schedule: dict[str, Any],
    spec: NotebookScheduleSpec,
    cron: CronSchedule,
    scheduled: datetime,
    name: str,
    *,
    manual: bool = False,
) -> dict[str, Any]:
    """The NotebookRun of one scheduled time: the template's spec, the scheduled time as the
    scheduledTimeParameter (in the schedule's time zone), labelled with and owned by the schedule."""
    meta = schedule["metadata"]
    run_spec = spec.run_template.spec.to_api()
    run_spec.pop("cancel", None)
    if spec.scheduled_time_parameter:
        local = cron.local(scheduled.replace(microsecond=0)).isoformat()
        run_spec["parameters"] = {**run_spec.get("parameters", {}), spec.scheduled_time_parameter: local}
    annotations = {SCHEDULED_TIME_ANNOTATION: format_time(scheduled)}
    if manual:
        annotations[TRIGGER_ANNOTATION] = "manual"
    return {
        "apiVersion": API_VERSION,
        "kind": "NotebookRun",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {SCHEDULE_LABEL: label_value(meta["name"]), "app.kubernetes.io/managed-by": "nbkube"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "NotebookSchedule",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": run_spec,
    }


def owned_runs(runs: list[dict[str, Any]], schedule_uid: str) -> list[dict[str, Any]]:
    """The runs this schedule controls (a label is only a hint: a schedule deleted and created again
    under the same name does not adopt its predecessor's runs)."""
    return [
        r
        for r in runs
        if any(
            o.get("uid") == schedule_uid and o.get("controller")
            for o in (r.get("metadata") or {}).get("ownerReferences") or []
        )
    ]


def run_state(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("state") or RunState.PENDING)


def is_active(run: dict[str, Any]) -> bool:
    return run_state(run) not in TERMINAL_RUN_STATES


def _order(run: dict[str, Any]) -> tuple[str, str, str]:
    meta = run.get("metadata") or {}
    scheduled = (meta.get("annotations") or {}).get(SCHEDULED_TIME_ANNOTATION) or ""
    return scheduled, meta.get("creationTimestamp") or "", meta.get("name") or ""


def to_prune(runs: list[dict[str, Any]], successful_limit: int, failed_limit: int) -> list[str]:
    """Finished runs past the history limits, oldest first: succeeded ones beyond
    successfulRunsHistoryLimit, failed and cancelled ones beyond failedRunsHistoryLimit."""
    succeeded = sorted((r for r in runs if run_state(r) == RunState.SUCCEEDED), key=_order)
    failed = sorted((r for r in runs if run_state(r) in (RunState.FAILED, RunState.CANCELLED)), key=_order)
    out: list[dict[str, Any]] = []
    for group, limit in ((succeeded, successful_limit), (failed, failed_limit)):
        out += group[: max(0, len(group) - limit)]
    return [r["metadata"]["name"] for r in out]


def last_successful_time(runs: list[dict[str, Any]], previous: str | None) -> str | None:
    """When the latest succeeded run finished (kept when that run has since been pruned)."""
    times = [
        t
        for r in runs
        if run_state(r) == RunState.SUCCEEDED
        and (t := parse_time((r.get("status") or {}).get("completionTime")))
    ]
    before = parse_time(previous)
    if before is not None:
        times.append(before)
    return format_time(max(times)) if times else None
