"""The web page's files as the user API serves them (after its review): each with a policy that lets
only the page's own script run, a redirect from the bare path, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from nbkube.userapi.webpage import CONTENT_SECURITY_POLICY, page_routes
from nbkube_testenv.localhttp import serving

BASE = "/apis/subresources.nbkube.io/v1alpha1/namespaces/team-a/repositories/results/ui"


@pytest.fixture
async def base() -> AsyncIterator[str]:
    app = web.Application()
    for route in page_routes():
        app.router.add_route(route.method, BASE + route.path, route.handler)
    async with serving(app) as url:
        yield url + BASE


async def test_the_page_and_its_files_carry_the_pages_policy(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for name, content_type, expected in (
            ("/", "text/html", b'<script src="app.js"></script>'),
            ("/app.js", "text/javascript", b"textContent"),
            ("/style.css", "text/css", b".progress"),
        ):
            async with http.get(base + name) as response:
                assert response.status == 200
                assert response.content_type == content_type
                assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert expected in await response.read()
        async with http.get(base, allow_redirects=False) as response:
            assert response.status == 302 and response.headers["Location"] == "ui/"
        async with http.get(base + "/../secrets") as response:
            assert response.status == 404
        async with http.get(base + "/index.html.bak") as response:
            assert response.status == 404


def test_the_pages_policy_allows_no_inline_script_and_no_framing_of_it() -> None:
    directives = {d.split()[0]: d.split()[1:] for d in CONTENT_SECURITY_POLICY.split("; ")}
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert directives["connect-src"] == ["'self'"]


def test_the_page_writes_cluster_text_only_as_text() -> None:
    from nbkube.userapi.webpage import asset

    script = asset("app.js").decode()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
