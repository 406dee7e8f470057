"""The operator's sessions: one driver per live session (a kopf daemon each), the kernels they hold
as the watch stream reports them (for the janitor), and the door the user API's routes use."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from nbkube.api.session import SessionState
from nbkube.config import Settings
from nbkube.kernels import KernelRegistry
from nbkube.kube import Kube
from nbkube.run.commit import RunStore
from nbkube.session.driver import Operation, SessionContext, SessionDriver
from nbkube.session.work import OperationError, SessionStore

READY_WAIT_SECONDS = 30.0


class SessionService:
    def __init__(
        self, kube: Kube, settings: Settings, registry: KernelRegistry, store: SessionStore, files: RunStore
    ) -> None:
        self.context = SessionContext(kube, settings, registry, store, files)
        self.active: dict[str, SessionDriver] = {}
        self._by_name: dict[tuple[str, str], str] = {}
        self._states: dict[str, str] = {}
        self._held_kernels: dict[str, str] = {}

    async def drive(self, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
        meta = body["metadata"]
        uid, key = meta["uid"], (meta["namespace"], meta["name"])
        driver = SessionDriver(self.context, body, stopped)
        self.active[uid] = driver
        self._by_name[key] = uid
        try:
            await driver.drive()
        finally:
            self.active.pop(uid, None)
            if self._by_name.get(key) == uid:
                del self._by_name[key]

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return
        self._held_kernels.pop(uid, None)
        self._states.pop(uid, None)
        if event_type == "DELETED":
            return
        status = body.get("status") or {}
        state = status.get("state") or SessionState.PENDING
        self._states[uid] = state
        kernel_id = (status.get("kernel") or {}).get("kernelId")
        if kernel_id and state != SessionState.ENDED:
            self._held_kernels[uid] = kernel_id

    def is_active(self, uid: str) -> bool | None:
        if uid in self.active:
            return True
        state = self._states.get(uid)
        return None if state is None else state != SessionState.ENDED

    def held_kernels(self) -> set[str]:
        return set(self._held_kernels.values())

    async def driver(self, namespace: str, name: str, wait: float = READY_WAIT_SECONDS) -> SessionDriver:
        """The live session's driver once it is Ready (waiting up to `wait` for a starting one)."""
        uid = self._by_name.get((namespace, name))
        driver = self.active.get(uid) if uid is not None else None
        if driver is None:
            raise OperationError(
                409, "Conflict", f'session "{name}" is not running (not created yet, ended, or starting)'
            )
        try:
            await asyncio.wait_for(driver.ready.wait(), wait)
        except TimeoutError:
            raise OperationError(
                409, "Conflict", f'session "{name}" is not Ready yet: {driver.status.message}'
            ) from None
        return driver

    async def submit(self, namespace: str, name: str, kind: str, request: Any = None) -> Operation:
        return (await self.driver(namespace, name)).submit(kind, request)

    async def interrupt(self, namespace: str, name: str) -> bool:
        return (await self.driver(namespace, name)).interrupt()
