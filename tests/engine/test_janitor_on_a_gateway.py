"""The operator's janitor against a real gateway: a busy kernel left behind is shut down once sweeps
have seen it orphaned long enough, and a sweep that cannot reach the pod does not restart that clock."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_helpers import wait_for_state
from nbkube.engine import GatewayClient
from nbkube.gateway.local import LocalGateway, free_port
from nbkube.janitor import GatewayView, Janitor, JanitorSettings, RunView

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(120)]

BUSY_SECONDS = 1.0


async def test_a_pod_out_of_reach_for_a_sweep_keeps_its_busy_orphans_clock(
    gateway: LocalGateway, client: GatewayClient, tmp_path: Path
) -> None:
    kernel_id = (await client.start_kernel("python3"))["id"]
    connection = await client.connect(kernel_id)
    await connection.send(
        "shell", "execute_request", {"code": "import time\nwhile True:\n    time.sleep(0.1)", "silent": False}
    )
    await wait_for_state(client, kernel_id, "busy")
    await connection.close()  # left behind: busy, held by no run, nobody connected

    async with GatewayClient(f"http://127.0.0.1:{free_port()}", "t", request_timeout=5) as unreachable:
        reach = {"pod": client}
        janitor = Janitor(
            RunView(is_active=lambda uid: None, held_kernels=set),
            GatewayView(clients=lambda: reach.items(), in_use=set),
            tmp_path,
            JanitorSettings(kernel_idle_seconds=3600, busy_kernel_seconds=BUSY_SECONDS),
        )
        try:
            assert await janitor.sweep_kernels() == 0  # first seen orphaned now
            await asyncio.sleep(BUSY_SECONDS + 0.2)
            reach["pod"] = unreachable
            assert await janitor.sweep_kernels() == 0  # the pod cannot be listed this time
            reach["pod"] = client
            assert await janitor.sweep_kernels() == 1
            assert kernel_id not in {k["id"] for k in await client.list_kernels()}
        finally:
            await client.delete_kernel(kernel_id)
