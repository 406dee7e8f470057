"""Drives `nbkube mcp` as an MCP client would: the server started as `python -m nbkube.cli mcp` over
stdio with a kubeconfig and namespace, the SDK's own ClientSession on it."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client


@asynccontextmanager
async def mcp_server(kubeconfig: Path, namespace: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "nbkube.cli", "mcp", "-n", namespace],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def texts(result: Any) -> str:
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def images(result: Any) -> list[types.ImageContent]:
    return [block for block in result.content if isinstance(block, types.ImageContent)]


async def ok(client: ClientSession, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} {arguments}: {texts(result)}"
    return result


async def tool_error(client: ClientSession, tool: str, **arguments: Any) -> str:
    """The message of a call that must be a tool error (not a protocol error, not a crash)."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} {arguments} was not an error: {texts(result)}"
    message = texts(result)
    assert message and "Traceback (most recent call last)" not in message.split("── cell")[0], message
    return message
