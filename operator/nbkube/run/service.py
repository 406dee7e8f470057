"""The operator's runs: one driver per active run (a kopf daemon each), the runs' states from the
watch stream (metrics, the janitor's view), and expiry after ttlSecondsAfterFinished."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kopf

from nbkube.api import TERMINAL_RUN_STATES, RunState
from nbkube.api.common import parse_timestamp
from nbkube.config import Settings
from nbkube.kernels import KernelRegistry
from nbkube.kernelwork.journal import WorkJournal
from nbkube.kube import Kube, run_path
from nbkube.metrics import reconcile_total
from nbkube.metrics import runs as runs_gauge
from nbkube.run.commit import RunStore
from nbkube.run.driver import RunContext, RunDriver

# How long a finished run's journal stays, so `nbkube logs -f` followers read its last lines.
JOURNAL_GRACE_SECONDS = 30.0


class RunService:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        registry: KernelRegistry,
        results: RunStore | None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.registry = registry
        self.results = results
        self.active: dict[str, RunDriver] = {}
        self._states: dict[str, str] = {}
        self._held_kernels: dict[str, str] = {}
        self._counts: dict[str, int] = dict.fromkeys([s.value for s in RunState], 0)
        self._cleanups: set[asyncio.Task[None]] = set()

    def context(self) -> RunContext:
        return RunContext(self.kube, self.settings, self.registry, self.results, self.remove_later)

    async def drive(self, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
        uid = body["metadata"]["uid"]
        driver = RunDriver(self.context(), body, stopped)
        self.active[uid] = driver
        try:
            await driver.drive()
        finally:
            self.active.pop(uid, None)
            if driver.status.state in TERMINAL_RUN_STATES:
                reconcile_total.labels("notebookrun", str(driver.status.state)).inc()

    def remove_later(self, journal: WorkJournal, delay: float = JOURNAL_GRACE_SECONDS) -> None:
        async def remove() -> None:
            await asyncio.sleep(delay)
            await journal.remove()

        task = asyncio.create_task(remove())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Keeps nbkube_runs{state} current from the watch stream."""
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return
        previous = self._states.pop(uid, None)
        if previous is not None:
            self._counts[previous] -= 1
        self._held_kernels.pop(uid, None)
        if event_type != "DELETED":
            status = body.get("status") or {}
            state = status.get("state") or RunState.PENDING
            self._states[uid] = state
            kernel_id = (status.get("kernel") or {}).get("kernelId")
            if kernel_id and state not in TERMINAL_RUN_STATES:
                self._held_kernels[uid] = kernel_id
            self._counts[state] = self._counts.get(state, 0) + 1
            driver = self.active.get(uid)
            if driver is not None and (body.get("spec") or {}).get("cancel"):
                driver.stops.cancel.set()  # from the watch stream: no per-run polling
        for state, count in self._counts.items():
            runs_gauge.labels(state).set(count)

    def is_active(self, uid: str) -> bool | None:
        """Whether a run is not finished: None when the watch never reported it (deleted)."""
        if uid in self.active:
            return True
        state = self._states.get(uid)
        return None if state is None else state not in TERMINAL_RUN_STATES

    def held_kernels(self) -> set[str]:
        """Kernels that unfinished runs hold (as their status says), including runs waiting to be
        reattached after an operator restart."""
        return set(self._held_kernels.values())

    async def expire_if_due(self, body: kopf.Body, within: float) -> None:
        """Deletes a finished run once its TTL has passed. A run due within the next `within` seconds (the
        timer's interval) is waited for here, so it goes on time rather than up to one interval late."""
        spec = body.get("spec") or {}
        remaining = ttl_remaining(spec, body.get("status") or {}, time.time())
        if remaining is None or remaining > within:
            return
        if remaining > 0:
            await asyncio.sleep(remaining)
        meta = body["metadata"]
        ttl = spec["ttlSecondsAfterFinished"]
        kopf.info(body, reason="Expired", message=f"deleted {ttl}s after it finished")
        await self.kube.delete(run_path(meta["namespace"], meta["name"]))


def ttl_remaining(spec: dict[str, Any], status: dict[str, Any], now: float) -> float | None:
    """Seconds until a finished run's ttlSecondsAfterFinished has passed (≤ 0: due now); None when it
    has no TTL or has not finished."""
    ttl = spec.get("ttlSecondsAfterFinished")
    finished = parse_timestamp(status.get("completionTime"))
    if ttl is None or finished is None:
        return None
    return finished + ttl - now
