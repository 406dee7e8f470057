"""`nbkube mcp --http`: the MCP server over streamable HTTP, on a loopback address, behind a bearer token.

The server acts with the user's kubeconfig, so whoever reaches it acts as the user: it listens on a
loopback address only (the SDK then refuses requests whose Host or Origin is not loopback, which stops
DNS rebinding from a web page) and answers only requests that carry the token, compared in constant
time. The token comes from NBKUBE_MCP_TOKEN or is made at start and printed on stderr, as Jupyter
prints its own. A plain static token rather than the SDK's OAuth resource-server settings: there is no
authorization server here, only one user and the clients they configure.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

TOKEN_ENV = "NBKUBE_MCP_TOKEN"
MCP_PATH = "/mcp"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNAUTHORIZED = (
    b"nbkube mcp: send the header 'Authorization: Bearer <token>' with the token nbkube mcp printed "
    b"when it started (or the one in " + TOKEN_ENV.encode() + b")\n"
)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server_token() -> tuple[str, bool]:
    """(the token, whether it was made here rather than given in NBKUBE_MCP_TOKEN)."""
    given = os.environ.get(TOKEN_ENV, "").strip()
    return (given, False) if given else (secrets.token_urlsafe(32), True)


def bearer_guard(app: ASGIApp, token: str) -> ASGIApp:
    """`app`, answering 401 to an HTTP request without `Authorization: Bearer <token>`."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope.get("headers") or () if k.lower() == b"authorization"), b"")
            if not hmac.compare_digest(bytes(given), expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"www-authenticate", b'Bearer realm="nbkube mcp"'),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": UNAUTHORIZED})
                return
        await app(scope, receive, send)

    return guarded


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on a loopback address (ValueError for any other)."""
    if not is_loopback(host):
        raise ValueError(
            f"--host {host} is not a loopback address: nbkube mcp acts with your credentials, so it "
            "listens on 127.0.0.1, ::1 or localhost only (reach it from elsewhere through an SSH tunnel)"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def serve(app: ASGIApp, sock: socket.socket) -> None:
    """Serves `app` on `sock` until interrupted (uvicorn, which the SDK's HTTP transport uses too)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
