"""Taking a kernel of an environment for a piece of work, and finding it again after a restart.

A kernel comes from the environment's gateway pods (the operator's registry, nbkube/kernels.py). When no
pod is ready yet, or every pod is at its kernel limit, the work waits (and says so) for up to the
environment wait, racing the wait against its stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from nbkube.api import Reason
from nbkube.engine import EngineError, GatewayUnavailable, KernelLimitReached, KernelNotFound
from nbkube.engine.errors import GatewayError
from nbkube.kernels import GatewaysAtCapacity, KernelLease, KernelRegistry, NoGatewayAvailable
from nbkube.kernelwork.failures import Failure
from nbkube.kernelwork.stops import Stops

log = logging.getLogger(__name__)

KERNEL_WAIT_FIRST_DELAY = 0.5
KERNEL_WAIT_MAX_DELAY = 5.0
KERNEL_START_RETRIES = 2
REATTACH_POD_WAIT_SECONDS = 15.0

# Says (reason, message) that the work waits: e.g. a Pending status the user sees at once.
OnWaiting = Callable[[str, str], Awaitable[None]]
# Why the environment has no ready pod, as its Ready condition says (None when it does not say).
NotReadyDetail = Callable[[], Awaitable[str | None]]


class KernelSource:
    """Kernels of one environment, for one piece of work."""

    def __init__(
        self,
        registry: KernelRegistry,
        namespace: str,
        environment: str,
        *,
        wait_seconds: float,
        not_ready_detail: NotReadyDetail | None = None,
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self.environment = environment
        self.wait_seconds = wait_seconds
        self._not_ready_detail = not_ready_detail

    async def acquire(self, stops: Stops, on_waiting: OnWaiting) -> KernelLease | Failure | None:
        """A kernel; a failure when none came; None when a stop came first (see `stops`)."""
        name = self.environment
        if not self.registry.has_ready_pod(self.namespace, name):
            await on_waiting(
                Reason.WAITING_FOR_ENVIRONMENT,
                await self._why_not_ready(f"waiting for a ready gateway pod of {name}"),
            )
            ready = await stops.interruptible(
                self.registry.wait_for_pod(self.namespace, name, self.wait_seconds)
            )
            if ready is None:
                return None
            if not ready:
                return Failure(
                    Reason.GATEWAY_LOST,
                    await self._why_not_ready(
                        f"environment {name} had no ready gateway pod for {self.wait_seconds:.0f}s"
                    ),
                )
        return await self._free_kernel(stops, on_waiting)

    async def _why_not_ready(self, message: str) -> str:
        detail = None
        if self._not_ready_detail is not None:
            try:
                detail = await self._not_ready_detail()
            except Exception as exc:  # only a better message is lost
                log.debug("environment %s/%s: no detail: %s", self.namespace, self.environment, exc)
        return f"{message}: {detail}" if detail else message

    async def _free_kernel(self, stops: Stops, on_waiting: OnWaiting) -> KernelLease | Failure | None:
        """When every gateway pod is at its kernel limit, waits (WaitingForKernel) for one to be
        released, up to the environment wait, instead of failing at once."""
        name = self.environment
        deadline = time.monotonic() + self.wait_seconds
        delay = KERNEL_WAIT_FIRST_DELAY
        waiting = False
        failed_starts = 0
        while True:
            try:
                return await self.registry.acquire(self.namespace, name)
            except (GatewaysAtCapacity, KernelLimitReached) as exc:
                if time.monotonic() + delay > deadline:
                    return Failure(
                        Reason.KERNEL_LIMIT_REACHED,
                        f"no kernel of environment {name} became free within {self.wait_seconds:.0f}s: {exc}",
                    )
                if not waiting:
                    waiting = True
                    await on_waiting(
                        Reason.WAITING_FOR_KERNEL,
                        f"every gateway pod of {name} is at its kernel limit; waiting for a free kernel",
                    )
                if await stops.interruptible(asyncio.sleep(delay, True)) is None:
                    return None
                delay = min(delay * 2, KERNEL_WAIT_MAX_DELAY)
            except GatewayError as exc:
                # A gateway under load may refuse one start (an error of its own, a 5xx): try again.
                failed_starts += 1
                if failed_starts > KERNEL_START_RETRIES or (exc.status is not None and exc.status < 500):
                    return Failure(Reason.GATEWAY_LOST, f"no kernel could be started: {exc}")
                log.warning(
                    "environment %s/%s: a kernel start failed, trying again: %s", self.namespace, name, exc
                )
                if await stops.interruptible(asyncio.sleep(delay, True)) is None:
                    return None
                delay = min(delay * 2, KERNEL_WAIT_MAX_DELAY)
            except (NoGatewayAvailable, EngineError) as exc:
                return Failure(Reason.GATEWAY_LOST, f"no kernel could be started: {exc}")

    async def reattach(
        self,
        pod: str,
        kernel_id: str,
        session_id: str,
        in_flight: Sequence[str] = (),
        delivered: Sequence[str] = (),
    ) -> KernelLease | None:
        """After an operator restart: the same kernel and websocket session (so the gateway replays
        what the kernel sent meanwhile); None when the kernel or its pod is gone. `in_flight` are the
        message ids whose replies are still due, `delivered` those the previous connection had (their
        outputs are in the journal: the gateway's replay of them is dropped)."""
        await self.registry.wait_for_pod(self.namespace, self.environment, REATTACH_POD_WAIT_SECONDS)
        try:
            return await self.registry.adopt(
                self.namespace,
                self.environment,
                pod,
                kernel_id,
                session_id,
                tuple(in_flight),
                tuple(delivered),
            )
        except (KernelNotFound, GatewayUnavailable) as exc:
            log.info("cannot reattach kernel %s on %s: %s", kernel_id[:8], pod, exc)
            return None
