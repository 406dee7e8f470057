"""A kernel start that its caller gives up on leaves no kernel behind: the gateway's answer still comes,
and the kernel it names is deleted (a cancelled run, or inputs that turned out bad while a kernel was
being taken). Against a local HTTP server that holds the start until the test lets it answer."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from nbkube.engine import GatewayClient
from nbkube_testenv.localhttp import serving

pytestmark = pytest.mark.timeout(60)


async def test_a_start_cancelled_mid_request_deletes_the_kernel_the_gateway_then_started() -> None:
    received = asyncio.Event()
    answer = asyncio.Event()
    deleted: list[str] = []

    async def start(request: web.Request) -> web.Response:
        received.set()
        await answer.wait()
        return web.json_response({"id": "k-1", "name": "python3"}, status=201)

    async def delete(request: web.Request) -> web.Response:
        deleted.append(request.match_info["kernel_id"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/kernels", start)
    app.router.add_delete("/api/kernels/{kernel_id}", delete)
    async with serving(app) as base:
        async with GatewayClient(base, "t") as client:
            starting = asyncio.create_task(client.start_kernel("python3"))
            await received.wait()  # the gateway is starting it
            starting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await starting
            assert deleted == []
            answer.set()  # the gateway answers: the kernel exists now, and is deleted
        assert deleted == ["k-1"]  # close() waited for the deletion
