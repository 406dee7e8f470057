"""What one request may cost: refs git would search history for, slow or stalled git fetches, and the
logs of a large result, each against a real repository and a real server."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator

import aiohttp
import nbformat
import pytest
from conftest import executed_notebook, record
from nbkube.results import ResultsStore
from nbkube.results.http import BadRef, GitGate, GitLimits, parse_ref, serve_results
from nbkube.run.logs import _notebook_events
from nbkube_testenv.procs import git_children


@pytest.mark.parametrize(
    "ref",
    [
        "HEAD^{/(.*)*(.*)*(.*)*\\1\\2\\3z}",
        "HEAD~3",
        "main@{1}",
        "-x",
        "main:secret",
        "a..b",
        "x.lock",
    ],
)
def test_a_ref_is_a_full_commit_id_or_a_branch_name_and_nothing_git_would_search_for(ref: str) -> None:
    with pytest.raises(BadRef):
        parse_ref(ref)


def test_valid_refs_name_exactly_one_commit_or_branch() -> None:
    assert parse_ref(None) == parse_ref("HEAD") == "HEAD"
    assert parse_ref("a" * 40) == "a" * 40
    assert parse_ref("main") == parse_ref("refs/heads/main") == "refs/heads/main"


@pytest.fixture
async def limited(store: ResultsStore) -> AsyncIterator[tuple[str, GitGate]]:
    await store.commit_run(record(1), executed_notebook(), final=True)
    gate = GitGate(GitLimits(max_concurrent=2, idle_seconds=1.0, body_seconds=3.0, queue_seconds=5.0))
    runner, url = await serve_results(store, gate=gate)
    yield url, gate
    await runner.cleanup()


async def test_stalled_upload_pack_requests_start_no_git_and_time_out(limited: tuple[str, GitGate]) -> None:
    url, _ = limited
    host, port = url.removeprefix("http://").split(":")
    before = git_children()
    writers = []
    for _ in range(50):  # headers sent, the body never comes
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /git/git-upload-pack HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-git-upload-pack-request\r\nContent-Length: 1000\r\n\r\n"
        )
        await writer.drain()
        writers.append((reader, writer))
    await asyncio.sleep(0.3)
    assert git_children() - before <= 0  # nobody's git started on a body that never came
    async with aiohttp.ClientSession() as http:  # an ordinary fetch is served meanwhile
        async with http.get(f"{url}/git/info/refs", params={"service": "git-upload-pack"}) as response:
            assert response.status == 200
    statuses = []
    for reader, writer in writers:
        status_line = await asyncio.wait_for(reader.readline(), 10)
        statuses.append(status_line.split()[1])
        writer.close()
    assert set(statuses) == {b"408"}


async def test_the_logs_of_a_large_result_are_read_in_bounded_memory(store: ResultsStore) -> None:
    nb = executed_notebook(0)
    for i in range(40):  # 40 MiB of output in all, each cell within the per-cell cap
        cell = nbformat.v4.new_code_cell(f"print('x' * 2**20)  # {i}", execution_count=i + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{i}\n" + "x" * (1 << 20))]
        nb.cells.append(cell)
    info = await store.commit_run(record(1), nb, final=True)
    del nb
    stat = await store.stat_file(info.path, info.commit)
    assert stat is not None and stat[1] > 40 * 2**20
    tracemalloc.start()
    try:
        seen = 0
        async for event in _notebook_events(store, stat[0]):
            if event["event"] == "output":
                seen += 1
                assert event["output"]["text"].startswith(f"{seen - 1}\nxxx")  # lines joined back
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == 40
    # A whole-notebook parse holds the 40 MiB text and its objects several times over; cell by cell,
    # a few cells at most.
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB"


async def test_an_upload_pack_body_past_the_limit_is_refused_without_starting_git(
    store: ResultsStore,
) -> None:
    await store.commit_run(record(1), executed_notebook(), final=True)
    gate = GitGate(GitLimits(max_body_bytes=64 * 1024))
    runner, url = await serve_results(store, gate=gate)
    try:
        before = git_children()
        async with aiohttp.ClientSession() as http:
            body = b"0032want " + b"0" * 40 + b"\n" * (200 * 1024)
            async with http.post(f"{url}/git/git-upload-pack", data=body) as response:
                assert response.status == 413
        assert git_children() - before <= 0
    finally:
        await runner.cleanup()
