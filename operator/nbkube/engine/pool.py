"""A warm pool of started kernels on one gateway."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nbkube.engine.client import GatewayClient
from nbkube.engine.connection import KernelConnection
from nbkube.engine.errors import EngineError

log = logging.getLogger(__name__)

# Work done in each kernel once it answers, before it is pooled (its connection and kernel_info reply).
Prime = Callable[[KernelConnection, dict[str, Any]], Awaitable[object]]


class KernelPool:
    """Keeps `size` kernels started, connected and kernel_info-ready (and primed: `prime`, when given, is
    awaited on each before it is pooled); acquire() hands one out (an open KernelConnection) and the pool
    starts a replacement in the background.

    A kernel handed out is never handed out again: release() closes its connection and deletes it.
    close() deletes the kernels still pooled.
    """

    def __init__(
        self,
        client: GatewayClient,
        kernel_name: str,
        size: int,
        env: dict[str, str] | None = None,
        *,
        ready_timeout: float = 60.0,
        prime: Prime | None = None,
    ) -> None:
        self.client = client
        self.kernel_name = kernel_name
        self.size = size
        self.env = env
        self.ready_timeout = ready_timeout
        self.prime = prime
        self._ready: asyncio.Queue[KernelConnection] = asyncio.Queue()
        self._starting = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._handed_out: set[str] = set()
        self._closed = False
        self.last_error: BaseException | None = None

    @property
    def ready_count(self) -> int:
        return self._ready.qsize()

    async def start(self) -> None:
        """Begin filling the pool (returns at once; see wait_ready)."""
        self._replenish()

    async def wait_ready(self) -> None:
        """Wait until `size` kernels are ready."""
        while self._ready.qsize() < self.size:
            if self.last_error is not None and not self._tasks:
                raise self.last_error
            await asyncio.sleep(0.02)

    def _replenish(self) -> None:
        if self._closed:
            return
        while self._ready.qsize() + self._starting < self.size:
            self._starting += 1
            task = asyncio.create_task(self._start_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _start_one(self) -> None:
        try:
            connection = await self._new_kernel()
        except Exception as e:
            self.last_error = e
            log.warning("warm kernel for %s failed to start: %r", self.kernel_name, e)
            return
        finally:
            self._starting -= 1
        if self._closed:
            await self._discard(connection)
        else:
            self._ready.put_nowait(connection)

    async def _new_kernel(self) -> KernelConnection:
        model = await self.client.start_kernel(self.kernel_name, self.env)
        try:
            connection = await self.client.connect(model["id"])
            info = await connection.kernel_info(reply_timeout=self.ready_timeout)
            if self.prime is not None:
                await self.prime(connection, info)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.client.delete_kernel(model["id"])
            raise
        return connection

    async def acquire(self) -> KernelConnection:
        """A ready kernel's connection: from the pool when one is waiting, otherwise a new kernel."""
        while not self._ready.empty():
            connection = self._ready.get_nowait()
            if connection.failure is None:
                self._handed_out.add(connection.kernel_id)
                self._replenish()
                return connection
            await self._discard(connection)
        self._replenish()
        if self._closed:
            raise EngineError("kernel pool is closed")
        connection = await self._new_kernel()
        self._handed_out.add(connection.kernel_id)
        return connection

    async def release(self, connection: KernelConnection) -> None:
        """Done with a kernel: close its connection and delete it."""
        self._handed_out.discard(connection.kernel_id)
        await self._discard(connection)

    async def _discard(self, connection: KernelConnection) -> None:
        await connection.close()
        with contextlib.suppress(EngineError):
            await self.client.delete_kernel(connection.kernel_id)

    async def close(self) -> None:
        """Stop replenishing and delete the pooled (not the handed-out) kernels."""
        self._closed = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._ready.empty():
            await self._discard(self._ready.get_nowait())

    async def __aenter__(self) -> KernelPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
