"""Coalesces a run's (or a session's) status updates into at most one patch per interval.

Every cell produces several updates; patching each would flood the API server and every watcher.
The writer keeps the latest status and flushes it on a timer; transitions flush at once, and the
final status is written until it lands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nbkube.kube import Kube, NotFound
from nbkube.metrics import status_patches

log = logging.getLogger(__name__)

FINAL_WRITE_ATTEMPTS = 12
FINAL_WRITE_MAX_DELAY = 15.0

# Writes a status; raises when it did not land (a status whose object is gone counts as written).
PatchFn = Callable[[dict[str, Any]], Awaitable[None]]
# The status, or how to build it: building it only when a patch is due keeps a burst of cheap
# updates from serialising the whole status each time.
StatusSource = dict[str, Any] | Callable[[], dict[str, Any]]


class StatusWriter:
    def __init__(self, patch: PatchFn, interval: float = 1.0, label: str = "") -> None:
        self._patch = patch
        self.label = label  # e.g. "namespace/name", for the operator's log
        self._interval = interval
        self._pending: StatusSource | None = None
        self._last_flush = 0.0
        self.lock = asyncio.Lock()  # held while a patch is in flight
        self._timer: asyncio.Task[None] | None = None
        self.patches = 0

    def update(self, status: StatusSource) -> None:
        """Records the newest status; it is written within one interval."""
        self._pending = status
        if self._timer is None or self._timer.done():
            delay = max(0.0, self._last_flush + self._interval - time.monotonic())
            self._timer = asyncio.create_task(self._flush_later(delay))

    async def flush(self, status: StatusSource | None = None) -> None:
        """Writes now (for transitions the user must see at once, such as the end of a run)."""
        if status is not None:
            self._pending = status
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        await self._write()

    def discard(self) -> None:
        """Drops what is pending (the caller writes a newer status itself)."""
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        self._pending = None

    async def write_final(self, status: dict[str, Any]) -> bool:
        """Writes the last status of the work, trying again until it lands (nothing drives the object
        again until the operator restarts); no older patch lands after it. False when it never did."""
        self.discard()
        async with self.lock:
            for attempt in range(FINAL_WRITE_ATTEMPTS):
                try:
                    await self._patch(status)
                    self.patches += 1
                    return True
                except Exception as exc:
                    log.warning("final status of %s not written yet: %s", self.label, exc)
                    await asyncio.sleep(min(2**attempt, FINAL_WRITE_MAX_DELAY))
        return False

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._write()

    async def _write(self) -> None:
        async with self.lock:
            status, self._pending = self._pending, None
            if status is None:
                return
            self._last_flush = time.monotonic()
            self.patches += 1
            try:
                await self._patch(status() if callable(status) else status)
            except Exception as exc:  # the next flush carries the newest status anyway
                log.warning("status patch of %s failed: %s", self.label, exc)


def status_patcher(kube: Kube, path: str) -> PatchFn:
    """The PatchFn of an object's status subresource at `path`: a merge patch in which an absent
    kernel is written as removed; an object that is gone counts as written."""

    async def patch(status: dict[str, Any]) -> None:
        if "kernel" not in status:
            status["kernel"] = None  # merge patch: absent means "keep", None means "remove"
        try:
            await kube.merge_patch(path, {"status": status})
        except NotFound:
            return
        status_patches.inc()

    return patch
