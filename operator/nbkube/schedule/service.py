"""The operator's schedules: one loop per NotebookSchedule (a kopf daemon each) that creates its runs
at their times, as nbkube.schedule.plan decides, prunes their history and keeps its status.

A loop sleeps until the next scheduled time; a change of the schedule or of one of its runs (from the
watch streams, nbkube.handlers) wakes it at once, so a Forbid time runs as soon as the active run ends
and a resumed schedule catches up without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from nbkube.api.common import ConditionStatus, Reason, set_condition, validation_message
from nbkube.api.schedule import NotebookScheduleSpec, NotebookScheduleStatus
from nbkube.api.states import TERMINAL_RUN_STATES
from nbkube.config import Settings
from nbkube.kernelwork.stops import Stopped
from nbkube.kube import Conflict, Kube, KubeError, run_path, schedule_path
from nbkube.names import label_value
from nbkube.schedule import plan
from nbkube.schedule.cron import MAX_MISSED_COUNTED, CronSchedule, InvalidSchedule
from pydantic import ValidationError

log = logging.getLogger(__name__)

# The longest a loop sleeps without looking (a resync, in case a watch event was lost).
RESYNC_SECONDS = 60.0
RETRY_SECONDS = 5.0  # after an error creating a run that another try may not have
_REFUSED = (400, 422)


class ScheduleService:
    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self._wakes: dict[str, asyncio.Event] = {}
        # What this operator last wrote and posted per schedule uid: a body kopf has not refreshed yet
        # must not make a loop create a run again, or post an event twice.
        self._last_schedule: dict[str, datetime] = {}
        self._skipped: dict[str, datetime] = {}
        self._invalid: dict[str, str] = {}
        self._refused: dict[str, tuple[int | None, str]] = {}  # uid -> (generation, the API's refusal)

    def wake(self, uid: str) -> None:
        event = self._wakes.get(uid)
        if event is not None:
            event.set()

    def observe_run(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A run of a schedule ended or went: its schedule's loop looks again (a Forbid time may start,
        the history may need pruning)."""
        state = (body.get("status") or {}).get("state")
        if event_type != "DELETED" and state not in TERMINAL_RUN_STATES:
            return
        for owner in (body.get("metadata") or {}).get("ownerReferences") or []:
            if owner.get("kind") == "NotebookSchedule" and owner.get("uid"):
                self.wake(owner["uid"])

    def observe_schedule(self, event_type: str | None, body: dict[str, Any]) -> None:
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return
        if event_type == "DELETED":
            for memory in (self._last_schedule, self._skipped, self._invalid, self._refused):
                memory.pop(uid, None)
        self.wake(uid)

    async def drive(self, body: kopf.Body, stopped: Stopped) -> None:
        uid = body["metadata"]["uid"]
        wake = self._wakes.setdefault(uid, asyncio.Event())
        try:
            while not stopped:
                wake.clear()
                try:
                    delay = await self.reconcile(body)
                except (TimeoutError, KubeError, OSError) as exc:
                    log.warning("schedule %s: %s; trying again", body["metadata"]["name"], exc)
                    delay = RETRY_SECONDS
                await _sleep(wake, stopped, delay)
        finally:
            self._wakes.pop(uid, None)

    async def reconcile(self, body: kopf.Body) -> float:
        """One look at the schedule: a run created, skipped or replaced when one is due, old runs pruned,
        the status written. Returns how long to sleep before the next look."""
        meta = body["metadata"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        status = NotebookScheduleStatus.model_validate(body.get("status") or {})
        try:
            spec = NotebookScheduleSpec.model_validate(body.get("spec") or {})
            cron = CronSchedule.parse(
                spec.schedule, spec.time_zone, seconds_field=self.settings.schedule_seconds_field
            )
        except ValidationError as exc:
            return await self._invalid_spec(body, status, validation_message(exc))
        except InvalidSchedule as exc:
            return await self._invalid_spec(body, status, f"spec: {exc}")
        self._invalid.pop(uid, None)

        listed = await self.kube.list(run_path(namespace), f"{plan.SCHEDULE_LABEL}={label_value(name)}")
        runs = plan.owned_runs(listed, uid)
        active = [r["metadata"]["name"] for r in runs if plan.is_active(r)]
        now = datetime.now(UTC)
        last_schedule = _latest(plan.parse_time(status.last_schedule_time), self._last_schedule.get(uid))
        decision = plan.decide(
            spec,
            cron,
            created=plan.parse_time(meta.get("creationTimestamp")) or now,
            last_schedule=last_schedule,
            now=now,
            active=active,
            existing={r["metadata"]["name"] for r in runs},
            schedule_name=name,
        )
        ready = (Reason.SUSPENDED, "suspended: no new runs") if spec.suspend else (Reason.SCHEDULED, "")
        retry = False
        if decision.action == plan.Action.SKIP and decision.scheduled is not None:
            if self._skipped.get(uid) != decision.scheduled:
                self._skipped[uid] = decision.scheduled
                kopf.info(
                    body,
                    reason="RunSkipped",
                    message=f"not starting the run of {plan.format_time(decision.scheduled)}: "
                    f"{', '.join(active)} still active and concurrencyPolicy is Forbid",
                )
        elif decision.action == plan.Action.CREATE and decision.scheduled is not None:
            if decision.too_many_missed:
                kopf.warn(
                    body,
                    reason="TooManyMissedTimes",
                    message=f"more than {MAX_MISSED_COUNTED} scheduled times were missed: only the most "
                    "recent runs; set or lower startingDeadlineSeconds",
                )
            created = await self._create(body, spec, cron, decision, runs)
            if created is None:
                retry = True
            elif isinstance(created, str):
                active.append(created)
                self._last_schedule[uid] = decision.scheduled
                last_schedule = decision.scheduled
                self._refused.pop(uid, None)
            else:  # refused for good: the template is wrong (until the schedule changes)
                self._refused[uid] = (meta.get("generation"), created.message)
        refused = self._refused.get(uid)
        if refused is not None and refused[0] == meta.get("generation"):
            ready = (Reason.INVALID_SPEC, refused[1])
        pruned = await self._prune(body, spec, runs)
        status.active = sorted(active)
        status.last_schedule_time = plan.format_time(last_schedule) if last_schedule else None
        status.last_successful_time = plan.last_successful_time(
            [r for r in runs if r["metadata"]["name"] not in pruned], status.last_successful_time
        )
        status.next_schedule_time = plan.format_time(decision.next_time) if decision.next_time else None
        reason, message = ready
        if reason == Reason.SCHEDULED and decision.next_time is not None:
            message = f"next run at {status.next_schedule_time}"
        ok = ConditionStatus.FALSE if reason == Reason.INVALID_SPEC else ConditionStatus.TRUE
        generation = meta.get("generation")
        status.conditions = set_condition(status.conditions, "Ready", ok, reason, message, generation)
        status.observed_generation = generation
        await self._write_status(body, status)
        if retry:
            return RETRY_SECONDS
        if decision.next_time is None:
            return RESYNC_SECONDS
        # A hair past the time: a timer that fires early would only find nothing due yet.
        due = (decision.next_time - datetime.now(UTC)).total_seconds() + 0.01
        return max(0.01, min(RESYNC_SECONDS, due))

    async def _create(
        self,
        body: kopf.Body,
        spec: NotebookScheduleSpec,
        cron: CronSchedule,
        decision: plan.Decision,
        runs: list[dict[str, Any]],
    ) -> str | KubeError | None:
        """Replaces the active runs Replace names, then creates the scheduled run: its name (created now
        or by an earlier look), the API server's refusal when it refuses the run for good, or None for
        an error worth another try."""
        assert decision.scheduled is not None
        meta = body["metadata"]
        namespace = meta["namespace"]
        name = plan.run_name(meta["name"], decision.scheduled, cron)
        by_name = {r["metadata"]["name"]: r for r in runs}
        for old in decision.replace:
            if (by_name.get(old, {}).get("spec") or {}).get("cancel"):
                continue
            await self.kube.merge_patch(run_path(namespace, old), {"spec": {"cancel": True}})
            kopf.info(body, reason="RunReplaced", message=f"cancelled {old}: replaced by {name}")
        manifest = plan.run_manifest(dict(body), spec, cron, decision.scheduled, name)
        try:
            await self.kube.create(manifest)
        except Conflict:
            return name  # created by an earlier look (before an operator restart, say)
        except KubeError as exc:
            if exc.status in _REFUSED:
                refused = KubeError(
                    exc.status, exc.reason, f"the run template was refused: {exc.message}"[:2000]
                )
                kopf.warn(body, reason="FailedCreate", message=refused.message)
                return refused
            kopf.warn(body, reason="FailedCreate", message=f"creating run {name}: {exc.message}"[:2000])
            return None
        kopf.info(
            body,
            reason="RunCreated",
            message=f"created {name} for {plan.format_time(decision.scheduled)}",
        )
        return name

    async def _prune(
        self, body: kopf.Body, spec: NotebookScheduleSpec, runs: list[dict[str, Any]]
    ) -> set[str]:
        names = plan.to_prune(runs, spec.successful_runs_history_limit, spec.failed_runs_history_limit)
        namespace = body["metadata"]["namespace"]
        for name in names:
            await self.kube.delete(run_path(namespace, name))
            kopf.info(body, reason="RunDeleted", message=f"deleted {name}: past the history limit")
        return set(names)

    async def _invalid_spec(self, body: kopf.Body, status: NotebookScheduleStatus, message: str) -> float:
        uid = body["metadata"]["uid"]
        if self._invalid.get(uid) != message:
            self._invalid[uid] = message
            kopf.warn(body, reason=Reason.INVALID_SPEC, message=message)
        generation = body["metadata"].get("generation")
        status.conditions = set_condition(
            status.conditions, "Ready", ConditionStatus.FALSE, Reason.INVALID_SPEC, message, generation
        )
        status.observed_generation = generation
        status.next_schedule_time = None
        await self._write_status(body, status)
        return RESYNC_SECONDS

    async def _write_status(self, body: kopf.Body, status: NotebookScheduleStatus) -> None:
        new = status.to_api()
        if new == (body.get("status") or {}):
            return
        meta = body["metadata"]
        # Fields a merge patch must remove when they are gone from the status (a list the model empties
        # is written whole).
        patch: dict[str, Any] = {k: None for k in (body.get("status") or {}) if k not in new}
        patch.update(new)
        with contextlib.suppress(KubeError):  # a deleted schedule: nothing to write to
            await self.kube.merge_patch(
                schedule_path(meta["namespace"], meta["name"], "status"), {"status": patch}
            )


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


async def _sleep(wake: asyncio.Event, stopped: Stopped, delay: float) -> None:
    """Until `delay` has passed, the loop is woken or the daemon is stopped."""
    waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
