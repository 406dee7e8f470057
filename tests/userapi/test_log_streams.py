"""Log streams are bounded per user and overall, and a reader that stops reading loses its stream
instead of holding a slot (and the operator's memory) forever. Real TLS on loopback, the real route."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nbkube.userapi import paths
from nbkube_testenv.wait import wait_for
from userapi_helpers import HOST, Served, get, serving

RUN_UID = "0a1b2c3d-0000-4000-8000-000000000001"


class RunningRun:
    """Allows every review; the run exists and is running (its journal is in the test's tmp_path)."""

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        return {"status": {"allowed": True}}

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        return {"metadata": {"name": "run", "uid": RUN_UID}, "status": {"state": "Running"}}


class NoResults:
    async def repository(self, namespace: str) -> None:
        return None


@pytest.fixture
async def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with serving(
        tmp_path, RunningRun(), NoResults(), max_log_streams_per_user=2, write_stall_seconds=1.0
    ) as served:
        yield served


def as_user(name: str) -> dict[str, str]:
    return {"Host": HOST, "X-Remote-User": name}


async def test_a_user_past_their_log_streams_gets_429_while_others_still_stream(served: Served) -> None:
    log = paths.run_log_path("team-a", "run") + "?follow=true"
    context = served.context()
    async with aiohttp.ClientSession() as http:
        held = [
            await http.get(served.base + log, ssl=context, headers=as_user("alice"), server_hostname=HOST)
            for _ in range(2)
        ]
        try:
            assert [r.status for r in held] == [200, 200]
            status, body = await get(served.base, log, context, {"X-Remote-User": "alice"})
            assert status == 429 and "alice has 2 log streams open already" in body
            bob = await http.get(served.base + log, ssl=context, headers=as_user("bob"), server_hostname=HOST)
            assert bob.status == 200
            bob.close()
        finally:
            for response in held:
                response.close()
    # (in a thread: the server shares this event loop)
    await asyncio.to_thread(
        wait_for, lambda: served.api.log_streams == 0, "the closed streams' slots back", 30
    )
    assert served.api._streams_of == {}


async def test_a_reader_that_stops_reading_loses_its_stream_and_its_slot(
    served: Served, tmp_path: Path
) -> None:
    # A journal far larger than the socket buffers: the server's writes must block on this reader.
    line = json.dumps(
        {"attempt": 1, "index": 0, "output": {"output_type": "stream", "name": "stdout", "text": "x" * 65536}}
    )
    with (tmp_path / f"{RUN_UID}.jsonl").open("w") as journal:
        journal.write(json.dumps({"attempt": 1, "index": 0, "msgId": "m"}) + "\n")
        for _ in range(1024):  # 64 MiB
            journal.write(line + "\n")
    log = paths.run_log_path("team-a", "run") + "?follow=true"
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(served.base.rsplit(":", 1)[1]), ssl=served.context(), server_hostname=HOST
    )
    try:
        writer.write(f"GET {log} HTTP/1.1\r\nHost: {HOST}\r\nX-Remote-User: carol\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert served.api.log_streams == 1
        # ... and now read nothing more. The server gives up on the stalled stream.
        await asyncio.to_thread(
            wait_for, lambda: served.api.log_streams == 0, "the stalled stream closed", 60
        )
        received = len(head)
        while chunk := await reader.read(1 << 20):  # what was in flight, then the end of the connection
            received += len(chunk)
        assert received < 32 * 1024 * 1024  # it never read the whole journal: the server stopped writing
    finally:
        writer.close()
