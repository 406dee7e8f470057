"""A small async Kubernetes client on aiohttp that speaks plain dicts.

Our objects are built by pure functions returning dicts; this module sends them as they are
(server-side apply for owned children, merge patches for status) instead of converting them to
and from generated model classes. Credentials come from the official client's loaders (in-cluster
service account, else the kubeconfig with its exec plugins and token refresh); requests go through
one aiohttp session. kubernetes_asyncio did the same with about 30 MiB more resident memory, for
model classes nbkube never uses.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from nbkube import API_VERSION, objectdata

FIELD_MANAGER = "nbkube"

# How long a bearer token is used before the client's refresh hook is asked again (in-cluster tokens
# are rotated by the kubelet; exec plugins hand out short-lived ones).
AUTH_REFRESH_SECONDS = 60.0

_CORE_PLURALS = {
    "Pod": "pods",
    "Secret": "secrets",
    "ConfigMap": "configmaps",
    "Service": "services",
    "Event": "events",
    "Deployment": "deployments",
    "NetworkPolicy": "networkpolicies",
    "NotebookRun": "notebookruns",
    "NotebookEnvironment": "notebookenvironments",
    "NotebookSession": "notebooksessions",
    "NotebookSchedule": "notebookschedules",
}


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_SEGMENT_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class InvalidName(ValueError):
    """A namespace or object name that is not a Kubernetes name: it never reaches a request path."""


def check_name(value: str, what: str = "name", *, max_length: int = 253) -> str:
    """`value` if it is a Kubernetes object name (DNS-1123 subdomain; namespaces: a label, 63), else
    InvalidName. Every name from a request or a spec goes through here before it reaches a path."""
    if len(value) > max_length or not _NAME_RE.match(value) or ".." in value:
        raise InvalidName(f"invalid {what} {value[:80]!r}: not a Kubernetes name")
    return value


def check_namespace(value: str) -> str:
    if "." in value:
        raise InvalidName(f"invalid namespace {value[:80]!r}: not a Kubernetes name")
    return check_name(value, "namespace", max_length=63)


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    sub: str | None = None,
) -> str:
    """The API path of a resource; namespace and name are checked as Kubernetes names and quoted as
    path segments, so no value can add segments, a query or `..` to the request."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{quote(check_namespace(namespace), safe='')}")
    parts.append(plural)
    if name:
        parts.append(quote(check_name(name), safe=""))
    if sub:
        if not _SEGMENT_RE.match(sub):
            raise InvalidName(f"invalid subresource {sub[:80]!r}")
        parts.append(sub)
    return "/".join(parts)


def run_path(namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """The API path of NotebookRuns (of a namespace), of one, or of its subresource."""
    return resource_path(API_VERSION, "notebookruns", namespace, name, sub)


def session_path(namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """The API path of NotebookSessions (of a namespace), of one, or of its subresource."""
    return resource_path(API_VERSION, "notebooksessions", namespace, name, sub)


def schedule_path(namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """The API path of NotebookSchedules (of a namespace), of one, or of its subresource."""
    return resource_path(API_VERSION, "notebookschedules", namespace, name, sub)


def environment_path(namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    """The API path of NotebookEnvironments (of a namespace), of one, or of its subresource."""
    return resource_path(API_VERSION, "notebookenvironments", namespace, name, sub)


def path_of(obj: dict[str, Any], sub: str | None = None, *, with_name: bool = True) -> str:
    meta = obj["metadata"]
    return resource_path(
        obj["apiVersion"],
        _CORE_PLURALS[obj["kind"]],
        meta.get("namespace"),
        meta["name"] if with_name else None,
        sub,
    )


def load_configuration(kubeconfig: str | None = None) -> Any:
    """The official client's Configuration: in-cluster when in a pod, else from the kubeconfig.

    Blocking (reads files, may run an exec plugin): call it in a thread.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


def ssl_context(configuration: Any) -> ssl.SSLContext:
    """TLS as the Configuration says: its CA, its client certificate, verification on unless disabled."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif configuration.assert_hostname is False:
        context.check_hostname = False
    return context


def authorization(configuration: Any) -> str | None:
    """The Authorization header value, refreshing the token first when the Configuration can (Kubernetes
    dropped basic auth in 1.19; client certificates go in the TLS context).

    Blocking when a refresh hook runs: call it in a thread.
    """
    # The key is "BearerToken" in current clients, "authorization" in older ones.
    token = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    return str(token) if token else None


class Kube:
    """Dict-in, dict-out access to the API server."""

    def __init__(self, configuration: Any, session: aiohttp.ClientSession, *, timeout: float = 30.0) -> None:
        self.configuration = configuration
        self.session = session
        self.timeout = timeout
        self.server = str(configuration.host).rstrip("/")
        self._authorization: str | None = None
        self._authorized_at: float | None = None
        self._auth_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, kubeconfig: str | None = None, *, connections: int = 16) -> Kube:
        return await cls.open(
            await asyncio.to_thread(load_configuration, kubeconfig), connections=connections
        )

    @classmethod
    async def open(cls, configuration: Any, *, connections: int = 16, timeout: float = 30.0) -> Kube:
        """A client for an official-client Configuration (its host, TLS and credentials), with a pool of
        `connections` connections of its own and `timeout` seconds per request."""
        context = await asyncio.to_thread(ssl_context, configuration)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections, ssl=context))
        kube = cls(configuration, session, timeout=timeout)
        await kube._refresh_authorization(force=True)
        return kube

    async def close(self) -> None:
        await self.session.close()

    async def _refresh_authorization(self, *, force: bool = False) -> str | None:
        refreshable = self.configuration.refresh_api_key_hook is not None
        async with self._auth_lock:
            at = self._authorized_at
            stale = at is None or (refreshable and time.monotonic() - at >= AUTH_REFRESH_SECONDS)
            if force or stale:
                self._authorization = await asyncio.to_thread(authorization, self.configuration)
                self._authorized_at = time.monotonic()
            return self._authorization

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> dict[str, Any]:
        request = {
            "params": query or None,
            "data": None if body is None else json.dumps(body),
            "timeout": aiohttp.ClientTimeout(total=timeout or self.timeout),
            "proxy": self.configuration.proxy or None,
        }
        headers = {"Accept": "application/json", "Content-Type": content_type}
        status, _, raw = await self._authorized(method, path, headers, request)
        payload = _json_or_message(raw)
        if status >= 400:
            raise _status_error(status, payload)
        return payload

    async def _authorized(
        self, method: str, path: str, headers: dict[str, str], request: dict[str, Any]
    ) -> tuple[int, str, bytes]:
        status, content_type, raw = await self._send(
            method, path, headers, await self._refresh_authorization(), request
        )
        if status == 401:  # an expired token: ask the configuration for a fresh one, once
            auth = await self._refresh_authorization(force=True)
            status, content_type, raw = await self._send(method, path, headers, auth, request)
        return status, content_type, raw

    async def _send(
        self, method: str, path: str, headers: dict[str, str], auth: str | None, request: dict[str, Any]
    ) -> tuple[int, str, bytes]:
        if auth:
            headers = {**headers, "Authorization": auth}
        async with self.session.request(method, self.server + path, headers=headers, **request) as response:
            return response.status, response.content_type, await response.read()

    async def get_data(self, path: str, kind: str) -> dict[str, bytes] | None:
        """The data of the ConfigMap or Secret (`kind`) at `path` as bytes by key (nbkube.objectdata),
        None when it does not exist. Asked for as protobuf, which is several times cheaper than JSON for
        binary data; JSON when the server answers that. Error messages never carry the body."""
        request = {
            "params": None,
            "data": None,
            "timeout": aiohttp.ClientTimeout(total=self.timeout),
            "proxy": self.configuration.proxy or None,
        }
        headers = {"Accept": f"{objectdata.PROTOBUF}, application/json"}
        status, content_type, raw = await self._authorized("GET", path, headers, request)
        if status == 404:
            return None
        if status >= 400:
            payload = _json_or_message(raw) if content_type == "application/json" else {}
            raise _status_error(status, payload)
        if content_type == objectdata.PROTOBUF:
            # In line: a few slices of the body, no parsing of the values (and no worker thread's malloc
            # arena left holding megabytes once they are freed).
            return objectdata.from_protobuf(raw, kind)
        return await asyncio.to_thread(lambda: objectdata.from_json(json.loads(raw), kind))

    async def get(self, path: str) -> dict[str, Any]:
        return await self.call("GET", path)

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.get(path)
        except NotFound:
            return None

    async def list(self, path: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        return (await self.call("GET", path, query=query)).get("items", [])

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", path_of(obj, with_name=False), obj)

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply: we own exactly the fields we set."""
        return await self.call(
            "PATCH",
            path_of(obj),
            obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")],
            content_type="application/apply-patch+yaml",
        )

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.call("PATCH", path, patch, content_type="application/merge-patch+json")

    async def delete(self, path: str, *, propagation: str = "Background") -> None:
        try:
            await self.call("DELETE", path, {"propagationPolicy": propagation})
        except NotFound:
            pass


def _json_or_message(raw: bytes) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        payload = json.loads(raw)
    except ValueError:  # a proxy's or load balancer's own error page
        return {"message": raw.decode("utf-8", "replace")[:500]}
    return payload if isinstance(payload, dict) else {"message": str(payload)[:500]}


def _status_error(status: int, payload: Any) -> KubeError:
    message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
    reason = payload.get("reason", "") if isinstance(payload, dict) else ""
    kind = {404: NotFound, 409: Conflict}.get(status, KubeError)
    return kind(status, reason, message)
