"""Coalesces a run's status updates into at most one patch per interval.

Every cell produces several updates; patching each would flood the API server and every watcher.
The writer keeps the latest status and flushes it on a timer; terminal states flush at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

PatchFn = Callable[[dict[str, Any]], Awaitable[None]]
# The status, or how to build it: building it only when a patch is due keeps a burst of cheap
# updates from serialising the whole status each time.
StatusSource = dict[str, Any] | Callable[[], dict[str, Any]]


class StatusWriter:
    def __init__(self, patch: PatchFn, interval: float = 1.0) -> None:
        self._patch = patch
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
            await self._patch(status() if callable(status) else status)
