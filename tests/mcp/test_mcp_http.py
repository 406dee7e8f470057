"""`nbkube mcp --http`: streamable HTTP on a loopback address, driven by the SDK's own HTTP client; a
request without the bearer token is 401, one naming another Host (DNS rebinding) is refused, a
non-loopback --host is a usage error before anything listens."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_helpers import ok, texts
from nbkube.cli import main
from nbkube_testenv.cluster import ClusterInfo

TOKEN = "test-token-" + "x" * 20


@pytest.fixture
def http_server(cluster: ClusterInfo, operator: Any, namespace: str) -> Iterator[str]:
    """`nbkube mcp --http --port 0` with a token from the environment; yields its URL."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "NBKUBE_MCP_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "nbkube.cli", "mcp", "--http", "--port", "0", "-n", namespace]
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"streamable HTTP at (http://127\.0\.0\.1:\d+/mcp)", line)
        assert found, f"no URL announced: {line!r}"
        assert TOKEN not in line  # a given token is not printed
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(30)


async def test_an_agent_reaches_the_tools_over_http_with_the_token_and_nothing_without_it(
    http_server: str,
) -> None:
    async with httpx2.AsyncClient() as plain:
        assert (await plain.post(http_server, json={})).status_code == 401
        wrong = await plain.post(http_server, json={}, headers={"Authorization": "Bearer not-it"})
        assert wrong.status_code == 401 and "Authorization: Bearer" in wrong.text
        rebinding = await plain.post(
            http_server, json={}, headers={"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"}
        )
        assert rebinding.status_code in (400, 403, 421), rebinding.status_code

    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as authorised,
        streamable_http_client(http_server, http_client=authorised) as streams,
        ClientSession(streams[0], streams[1]) as client,
    ):
        await client.initialize()
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"session_create", "execute", "cell_edit", "run_notebook"} <= tools
        assert texts(await ok(client, "session_list")) == "[]"  # the namespace, through the API server


def test_a_non_loopback_host_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["mcp", "--http", "--host", "0.0.0.0", "--kubeconfig", str(tmp_path / "none")]) == 2
    assert "not a loopback address" in capsys.readouterr().err
