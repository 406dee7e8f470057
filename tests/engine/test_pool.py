"""The warm kernel pool on a real gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_helpers import notebook, stream_text
from nbkube.engine import CellState, GatewayClient, KernelConnection, KernelPool, NotebookExecutor

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(180)]


async def kernel_ids(client: GatewayClient) -> set[str]:
    return {k["id"] for k in await client.list_kernels()}


async def test_pool_hands_out_ready_kernels_never_twice_and_replenishes(client: GatewayClient) -> None:
    before = await kernel_ids(client)
    pool = KernelPool(client, "python3", size=2, env={"KERNEL_POOL_MARK": "warm"})
    await pool.start()
    async with asyncio.timeout(120):
        await pool.wait_ready()
    pooled = await kernel_ids(client) - before
    assert len(pooled) == 2

    first = await pool.acquire()
    second = await pool.acquire()
    assert {first.kernel_id, second.kernel_id} == pooled  # handed out from the pool, already started
    assert first.kernel_id != second.kernel_id

    nb = notebook("import os\nprint(os.environ.get('KERNEL_POOL_MARK'))")
    result = await NotebookExecutor(first).execute_notebook(nb)
    assert result.state is CellState.SUCCEEDED
    assert stream_text(nb.cells[0]) == "warm\n"

    async with asyncio.timeout(120):
        await pool.wait_ready()  # replenished in the background
    replacements = await kernel_ids(client) - before - pooled
    assert len(replacements) == 2

    await pool.release(first)
    assert first.kernel_id not in await kernel_ids(client)  # released kernels are deleted, not reused
    third = await pool.acquire()
    assert third.kernel_id in replacements
    handed_out = {first.kernel_id, second.kernel_id, third.kernel_id}
    assert len(handed_out) == 3

    await pool.release(second)
    await pool.release(third)
    await pool.close()
    assert await kernel_ids(client) == before  # close() deleted the pooled ones


async def test_acquire_on_an_empty_pool_starts_a_kernel(client: GatewayClient) -> None:
    async with KernelPool(client, "python3", size=0) as pool:
        connection = await pool.acquire()
        info = await connection.kernel_info()
        assert info["language_info"]["name"] == "python"
        await pool.release(connection)
        assert connection.kernel_id not in await kernel_ids(client)


async def test_pooled_kernels_are_primed_before_they_are_handed_out(client: GatewayClient) -> None:
    primed: list[str] = []

    async def prime(connection: KernelConnection, info: dict[str, Any]) -> None:
        assert info["language_info"]["name"] == "python"  # the kernel_info reply the pool waited for
        await connection.kernel_info()  # the connection works here
        primed.append(connection.kernel_id)

    pool = KernelPool(client, "python3", size=1, prime=prime)
    await pool.start()
    try:
        async with asyncio.timeout(120):
            await pool.wait_ready()
        assert len(primed) == 1
        connection = await pool.acquire()
        assert connection.kernel_id == primed[0]
        await pool.release(connection)
    finally:
        await pool.close()
