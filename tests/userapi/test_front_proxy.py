"""The user-facing port admits only the API server's front proxy, and names only the user it forwards.

Real TLS on loopback with certificates made as the local control plane makes them: the front-proxy CA
and client certificate, and the cluster CA's admin client certificate (which must not get in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nbkube.kube import InvalidName, resource_path
from nbkube.userapi import paths
from userapi_helpers import client_context, get, serving


class Reviews:
    """The SubjectAccessReviews the server asks, answered by a fixed rule (the real API server answers
    them in tests/userapi/test_tenancy.py)."""

    def __init__(self, allowed_namespace: str) -> None:
        self.allowed_namespace = allowed_namespace
        self.asked: list[dict[str, Any]] = []
        self.paths: list[str] = []

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.asked.append(body["spec"])
        attrs = body["spec"]["resourceAttributes"]
        return {"status": {"allowed": attrs["namespace"] == self.allowed_namespace}}

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        self.paths.append(path)
        return None


class NoResults:
    async def repository(self, namespace: str) -> None:
        return None


@pytest.fixture
async def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    reviews = Reviews("team-a")
    async with serving(tmp_path, reviews, NoResults()) as served:
        yield served.pki, served.cert, reviews, served.base


async def test_a_client_without_the_front_proxy_certificate_never_completes_a_handshake(server) -> None:  # type: ignore[no-untyped-def]
    pki, cert, reviews, base = server
    forged = {"X-Remote-User": "system:admin", "X-Remote-Group": "system:masters"}
    log = paths.run_log_path("team-a", "run")
    for crt, key in ((None, None), (pki.admin_crt, pki.admin_key)):  # no certificate; the cluster CA's admin
        context = client_context(cert.cert_file.with_name("ca.crt"), crt, key)
        with pytest.raises(aiohttp.ClientError):
            await get(base, log, context, forged)
    assert reviews.asked == [] and reviews.paths == []


async def test_the_front_proxy_gets_what_the_review_allows_and_a_refusal_for_the_rest(server) -> None:  # type: ignore[no-untyped-def]
    pki, cert, reviews, base = server
    context = client_context(
        cert.cert_file.with_name("ca.crt"), pki.front_proxy_client_crt, pki.front_proxy_client_key
    )
    user = {"X-Remote-User": "alice", "X-Remote-Group": "team-a-viewers", "X-Remote-Extra-Scopes%2Fa": "x"}
    status, body = await get(base, paths.PREFIX, context, user)
    assert status == 200 and "notebookruns/log" in body
    status, body = await get(base, paths.run_log_path("team-b", "run"), context, user)
    assert status == 403 and "alice cannot get notebookruns/log" in body
    status, body = await get(base, paths.run_log_path("team-a", "run"), context, user)
    assert status == 404  # allowed, and there is no such run
    assert reviews.asked[0]["user"] == "alice" and reviews.asked[0]["groups"] == ["team-a-viewers"]
    assert reviews.asked[0]["extra"] == {"scopes/a": ["x"]}
    assert reviews.asked[0]["resourceAttributes"] == {
        "namespace": "team-b",
        "verb": "get",
        "group": "subresources.nbkube.io",
        "resource": "notebookruns",
        "subresource": "log",
        "name": "run",
    }
    status, _ = await get(base, paths.PREFIX, context, {})  # the front proxy named nobody
    assert status == 401


async def test_forged_names_never_reach_a_kubernetes_path(server) -> None:  # type: ignore[no-untyped-def]
    pki, cert, reviews, base = server
    context = client_context(
        cert.cert_file.with_name("ca.crt"), pki.front_proxy_client_crt, pki.front_proxy_client_key
    )
    user = {"X-Remote-User": "alice"}
    forged = "..%2F..%2F..%2Fapi%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets%2Fdb"
    for path in (
        f"{paths.PREFIX}/namespaces/team-a/notebookruns/{forged}/log",
        f"{paths.PREFIX}/namespaces/team-a/notebookruns/x%3Fwatch=true/log",
        f"{paths.PREFIX}/namespaces/..%2Fteam-a/notebookruns/x/log",
    ):
        status, _ = await get(base, path, context, user)
        assert status in (400, 404), path
    assert reviews.paths == []


@pytest.mark.parametrize(
    "namespace,name",
    [("team-a", "../../api/v1/secrets"), ("team-a", "x?watch=true"), ("a/b", "x"), ("team-a", "x%2F")],
)
def test_resource_paths_refuse_what_is_not_a_kubernetes_name(namespace: str, name: str) -> None:
    with pytest.raises(InvalidName):
        resource_path("nbkube.io/v1alpha1", "notebookruns", namespace, name)
