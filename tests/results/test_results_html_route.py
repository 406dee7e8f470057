"""The `html/<path>` route of a results repository (served alone, as the user API serves each namespace's
after authorising the caller): a stored notebook as inert HTML, with headers that let nothing run."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nbformat
import pytest
from nbkube.results import ResultsStore, RunRecord
from nbkube.results import http as results_http
from nbkube.results.http import RenderGate, serve_results
from nbkube.results.render import CONTENT_SECURITY_POLICY
from nbkube_testenv.hostile_notebooks import hostile_outputs, parse, png, png_images

IMAGE = png(6, 4, (200, 10, 10))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """(base URL, {"commit", "path"} of one committed run whose notebook has a PNG and hostile outputs)."""
    async with ResultsStore(tmp_path / "default.git", namespace="default", fsync=False) as store:
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("plot()", execution_count=1)
        cell.outputs = [
            nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(IMAGE).decode()}),
            *hostile_outputs(),
        ]
        nb.cells = [cell]
        record = RunRecord(namespace="default", name="plot", uid="uid-1", notebook="plot.ipynb")
        info = await store.commit_run(record, nb, final=True)
        runner, url = await serve_results(store)
        try:
            yield url, {"commit": info.commit, "path": info.path}
        finally:
            await runner.cleanup()


async def get(url: str) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, dict(response.headers), await response.text()


async def test_a_stored_notebook_is_served_as_html_with_a_sandboxing_policy(
    served: tuple[str, dict[str, str]],
) -> None:
    url, result = served
    status, headers, body = await get(f"{url}/html/{result['path']}?ref={result['commit']}")
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Nbkube-Commit"] == result["commit"]
    assert png_images(body) == [IMAGE]
    assert "script" not in {tag for tag, _ in parse(body).elements}
    # a branch name resolves too, and the answer says which commit it rendered
    status, headers, _ = await get(f"{url}/html/{result['path']}?ref=main")
    assert status == 200 and headers["X-Nbkube-Commit"] == result["commit"]


async def test_bad_requests_get_a_reason_and_no_render(served: tuple[str, dict[str, str]]) -> None:
    url, result = served
    status, _, body = await get(f"{url}/html/{result['path']}?ref=HEAD~1")
    assert status == 400 and "full commit id or a branch name" in body
    status, _, body = await get(f"{url}/html/default/plot/missing.ipynb")
    assert status == 404 and "not found" in body
    status, _, body = await get(f"{url}/html/default/plot/log.txt")
    assert status == 400 and "only notebooks render" in body


async def test_a_notebook_over_the_size_limit_is_413_before_it_is_read(
    served: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, result = served
    monkeypatch.setattr(results_http, "MAX_NOTEBOOK_BYTES", 100)
    status, _, body = await get(f"{url}/html/{result['path']}")
    assert status == 413 and "at most 100" in body


async def test_renders_past_the_concurrency_limit_wait_then_get_503() -> None:
    gate = RenderGate(max_concurrent=1, queue_seconds=0.05)
    nb = nbformat.writes(nbformat.v4.new_notebook()).encode()
    await gate._slots.acquire()  # one render in progress
    with pytest.raises(aiohttp.web.HTTPServiceUnavailable):
        await gate.render(nb, "t")
    gate._slots.release()
    gate = RenderGate(max_concurrent=1, queue_seconds=120)  # a second render waits its turn
    html, again = await asyncio.gather(gate.render(nb, "one"), gate.render(nb, "two"))
    assert "<title>one</title>" in html and "<title>two</title>" in again
