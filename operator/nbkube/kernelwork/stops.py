"""One race of the work against everything that can stop it.

The operator stopping (the kernel is left running for the next operator), a cancel, a deadline and
a failure of the work's own bookkeeping are raced here, once, for every wait of runs and sessions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from enum import Enum
from typing import Any, Protocol, TypeVar

from nbkube.kernelwork.failures import Failures

T = TypeVar("T")


class Stopped(Protocol):
    """What kopf gives a daemon (kopf.DaemonStopped): true once the daemon must stop."""

    def __bool__(self) -> bool: ...

    def wait(self) -> Awaitable[object]: ...


class StopCause(Enum):
    STOPPED = "stopped"  # the operator (or the daemon) is stopping: the work goes on after restart
    CANCEL = "cancel"
    DEADLINE = "deadline"
    FAILURE = "failure"


class Stops:
    def __init__(self, stopped: Stopped, failures: Failures) -> None:
        self.stopped = stopped
        self.failures = failures
        self.cancel = asyncio.Event()
        self.deadline = asyncio.Event()
        self._deadline_task: asyncio.Task[None] | None = None

    def pending(self) -> StopCause | None:
        """A cancel or a passed deadline, the stops that end the work (cancel first)."""
        if self.cancel.is_set():
            return StopCause.CANCEL
        if self.deadline.is_set():
            return StopCause.DEADLINE
        return None

    def set_deadline(self, at: float) -> None:
        """`deadline` is set at the wall-clock time `at` (seconds since the epoch)."""

        async def wait() -> None:
            await asyncio.sleep(max(0.0, at - time.time()))
            self.deadline.set()

        self.close()
        self._deadline_task = asyncio.create_task(wait())

    def close(self) -> None:
        if self._deadline_task is not None:
            self._deadline_task.cancel()
            self._deadline_task = None

    async def first(self, work: asyncio.Future[T], *, failures: bool = False) -> StopCause | None:
        """Waits for `work` or the first stop; None when the work finished first, else the stop's
        cause (stopping first, then cancel, deadline, failure). `work` is never cancelled here."""
        waiters: dict[asyncio.Task[object], StopCause] = {
            asyncio.create_task(_until(self.stopped.wait())): StopCause.STOPPED,
            asyncio.create_task(_until(self.cancel.wait())): StopCause.CANCEL,
            asyncio.create_task(_until(self.deadline.wait())): StopCause.DEADLINE,
        }
        if failures:
            waiters[asyncio.create_task(_until(self.failures.happened.wait()))] = StopCause.FAILURE
        try:
            racing: set[asyncio.Future[Any]] = {work, *waiters}
            done, _ = await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if work in done:
            return None
        return next(cause for task, cause in waiters.items() if task in done)

    async def interruptible(self, waiting: Awaitable[T]) -> T | None:
        """The result of `waiting`, or None when a stop came first (then `waiting` is cancelled)."""
        work = asyncio.ensure_future(waiting)
        if await self.first(work) is None:
            return work.result()
        work.cancel()
        return None


async def _until(waiting: Awaitable[object]) -> object:
    return await waiting
