"""The operator's API client: TLS and tokens as the official client's Configuration says, errors made
readable. Served by a small aiohttp server on loopback standing in for the API server's HTTP layer."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client
from nbkube.kube import Kube, KubeError, NotFound, authorization, ssl_context


@pytest.fixture
async def api_server() -> AsyncIterator[tuple[str, list[str]]]:
    """Accepts any bearer token but "t1" (an expired one); records the Authorization headers it saw."""
    seen: list[str] = []

    async def namespace(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") == "Bearer t1":
            return web.json_response(
                {"kind": "Status", "reason": "Unauthorized", "message": "expired"}, status=401
            )
        name = request.match_info["name"]
        if name == "missing":
            return web.json_response(
                {"kind": "Status", "reason": "NotFound", "message": "not there"}, status=404
            )
        if name == "behind-a-proxy":
            return web.Response(text="<html>502 Bad Gateway</html>", status=502, content_type="text/html")
        return web.json_response({"metadata": {"name": name}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{name}", namespace)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def configuration_with_rotating_token(host: str) -> client.Configuration:
    """A Configuration whose refresh hook hands out t1, t2, ... as exec plugins and in-cluster loading do."""
    configuration = client.Configuration(host=host)
    issued = iter(range(1, 100))

    def refresh(config: client.Configuration) -> None:
        config.api_key["BearerToken"] = f"Bearer t{next(issued)}"

    configuration.refresh_api_key_hook = refresh
    return configuration


async def test_an_expired_token_is_refreshed_once_and_the_request_retried(
    api_server: tuple[str, list[str]],
) -> None:
    url, seen = api_server
    kube = Kube(configuration_with_rotating_token(url), aiohttp.ClientSession())
    try:
        assert await kube.get("/api/v1/namespaces/default") == {"metadata": {"name": "default"}}
        # the fresh token is kept for the next request
        assert await kube.get("/api/v1/namespaces/other") == {"metadata": {"name": "other"}}
    finally:
        await kube.close()
    assert seen == ["Bearer t1", "Bearer t2", "Bearer t2"]


async def test_api_errors_carry_status_reason_and_message_even_from_a_proxy_error_page(
    api_server: tuple[str, list[str]],
) -> None:
    url, seen = api_server
    configuration = client.Configuration(host=url)
    configuration.api_key["BearerToken"] = "Bearer ok"
    kube = Kube(configuration, aiohttp.ClientSession())
    try:
        with pytest.raises(NotFound, match="404 NotFound: not there"):
            await kube.get("/api/v1/namespaces/missing")
        assert await kube.get_or_none("/api/v1/namespaces/missing") is None
        with pytest.raises(KubeError, match="502 : <html>502 Bad Gateway</html>"):
            await kube.get("/api/v1/namespaces/behind-a-proxy")
    finally:
        await kube.close()
    assert seen == ["Bearer ok"] * 3


def test_tls_follows_the_configuration() -> None:
    verified = client.Configuration(host="https://api.example:6443")
    assert ssl_context(verified).verify_mode is ssl.CERT_REQUIRED
    assert ssl_context(verified).check_hostname is True

    insecure = client.Configuration(host="https://api.example:6443")
    insecure.verify_ssl = False
    context = ssl_context(insecure)
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_NONE, False)


def test_authorization_is_the_bearer_token_or_nothing() -> None:
    token = client.Configuration()
    token.api_key["BearerToken"] = "Bearer abc"
    older_clients = client.Configuration()
    older_clients.api_key["authorization"] = "Bearer abc"
    assert authorization(token) == authorization(older_clients) == "Bearer abc"
    assert authorization(client.Configuration(username="u", password="p")) is None
