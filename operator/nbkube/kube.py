"""A small async Kubernetes client over kubernetes_asyncio's ApiClient that speaks plain dicts.

Our objects are built by pure functions returning dicts; this module sends them as they are
(server-side apply for owned children, merge patches for status) instead of converting them to
and from the generated model classes.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client, config

FIELD_MANAGER = "nbkube"

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


def resource_path(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    sub: str | None = None,
) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if sub:
        parts.append(sub)
    return "/".join(parts)


def path_of(obj: dict[str, Any], sub: str | None = None, *, with_name: bool = True) -> str:
    meta = obj["metadata"]
    return resource_path(
        obj["apiVersion"],
        _CORE_PLURALS[obj["kind"]],
        meta.get("namespace"),
        meta["name"] if with_name else None,
        sub,
    )


class Kube:
    """Dict-in, dict-out access to the API server."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        configuration = client.Configuration()
        configuration.connection_pool_maxsize = 16
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        response = await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
        data = await response.read()
        payload = json.loads(data) if data else {}
        if response.status >= 400:
            raise _status_error(response.status, payload)
        return payload

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


def _status_error(status: int, payload: Any) -> KubeError:
    message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
    reason = payload.get("reason", "") if isinstance(payload, dict) else ""
    kind = {404: NotFound, 409: Conflict}.get(status, KubeError)
    return kind(status, reason, message)
