"""`nbkube ui`'s loopback proxy refuses what the page does not need, before anything is forwarded: other
host names (DNS rebinding), writes, paths outside nbkube's namespaced resources, watches."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import pytest
from nbkube.cli.ui import UiProxy, forwardable, host_allowed
from nbkube.userapi import paths


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:8765", True),
        ("localhost:8765", True),
        ("LOCALHOST:8765", True),
        ("[::1]:8765", True),
        ("127.0.0.1:8766", False),
        ("127.0.0.1", False),
        ("evil.example:8765", False),
        ("127.0.0.1.nip.io:8765", False),
        ("", False),
        (None, False),
    ],
)
def test_only_the_listeners_own_loopback_host_names_are_served(host: str | None, allowed: bool) -> None:
    assert host_allowed(host, 8765) is allowed


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", paths.ui_path("team-a"), None),
        ("GET", paths.html_path("team-a", "team-a/run/nb.ipynb") + "?ref=main", None),
        ("HEAD", "/apis/nbkube.io/v1alpha1/namespaces/team-a/notebookruns/x", None),
        ("POST", paths.session_path("team-a", "s", "exec"), 405),
        ("DELETE", "/apis/nbkube.io/v1alpha1/namespaces/team-a/notebookruns/x", 405),
        ("GET", "/api/v1/namespaces/team-a/secrets", 404),
        ("GET", "/apis/nbkube.io/v1alpha1/notebookruns", 404),
        ("GET", "/apis/nbkube.io/v1alpha1/namespaces/team-a/../../../api/v1/secrets", 404),
        ("GET", "/apis/nbkube.io/v1alpha1/namespaces/team-a%2F..%2Fx/notebookruns", 404),
        ("GET", "/apis/nbkube.io/v1alpha1/namespaces/%2e%2e/notebookruns", 404),
        ("GET", "/apis/nbkube.io/v1alpha1/namespaces/a/notebookruns/..", 404),
        ("GET", "/apis/nbkube.io/v1alpha1/namespaces/team-a/notebookruns?watch=true", 400),
        ("GET", paths.run_log_path("team-a", "x") + "?follow=true", 400),
    ],
)
def test_only_reads_of_nbkube_in_a_namespace_are_forwarded(
    method: str, target: str, status: int | None
) -> None:
    refused = forwardable(method, target)
    assert (refused[0] if refused else None) == status


class _NoCluster:
    """What the proxy is given here: a namespace, and an API client that must never be used."""

    namespace = "team-a"

    @property
    def api_client(self) -> Any:
        raise AssertionError("a refused request reached the API server")


@pytest.fixture
def proxy() -> Iterator[UiProxy]:
    served = UiProxy(_NoCluster(), 0)  # type: ignore[arg-type]
    served.serve_in_background()
    yield served
    served.close()


def _request(proxy: UiProxy, method: str, path: str, host: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def test_the_listener_refuses_before_forwarding_and_sends_the_root_to_the_page(proxy: UiProxy) -> None:
    own = f"127.0.0.1:{proxy.port}"
    status, _, body = _request(proxy, "GET", paths.ui_path("team-a"), f"rebinding.example:{proxy.port}")
    assert status == 403 and b"Host header" in body
    assert _request(proxy, "POST", paths.ui_path("team-a"), own)[0] == 405
    assert _request(proxy, "PUT", paths.ui_path("team-a"), own)[0] == 405
    assert _request(proxy, "GET", "/api/v1/namespaces/team-a/secrets", own)[0] == 404
    status, headers, _ = _request(proxy, "GET", "/", f"localhost:{proxy.port}")
    assert status == 302 and headers["Location"] == paths.ui_path("team-a")
    assert proxy.url("team-a") == f"http://127.0.0.1:{proxy.port}{paths.ui_path('team-a')}"
