"""The operator's API client: TLS and tokens as the official client's Configuration says, and a proxy's
error page made readable (a small aiohttp server on loopback plays the proxy). Against the real API
server: tests/cluster/test_rbac.py."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from kubernetes import client
from nbkube.kube import Kube, KubeError, authorization, ssl_context
from nbkube_testenv.localhttp import serving


@pytest.fixture
async def proxy() -> AsyncIterator[str]:
    """What sits in front of some API servers: a proxy that answers with its own HTML error page."""

    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(text="<html>502 Bad Gateway</html>", status=502, content_type="text/html")

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{name}", bad_gateway)
    async with serving(app) as base:
        yield base


async def test_a_proxy_error_page_becomes_a_readable_api_error(proxy: str) -> None:
    kube = await Kube.open(client.Configuration(host=proxy))
    try:
        with pytest.raises(KubeError, match="502 : <html>502 Bad Gateway</html>"):
            await kube.get("/api/v1/namespaces/default")
    finally:
        await kube.close()


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
