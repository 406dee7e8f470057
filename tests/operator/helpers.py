"""Small helpers for the operator's integration tests."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request
from collections.abc import Callable
from typing import Any

from nbkube.engine import GatewayClient
from nbkube.environment.objects import GATEWAY_APP_NAME, GATEWAY_PORT
from nbkube_testenv.operator_fixtures import environment_manifest
from nbkube_testenv.wait import wait_for as shared_wait_for


def environment(name: str = "py", **spec: Any) -> dict[str, Any]:
    return environment_manifest(name, **spec)


def run(name: str, cells: list[str] | None = None, env: str = "py", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"environmentRef": {"name": env}, **spec}
    if cells is not None:
        body["notebook"] = {"cells": [{"source": c} for c in cells]}
    return {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookRun",
        "metadata": {"name": name},
        "spec": body,
    }


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 0.3) -> Any:
    return shared_wait_for(check, what, timeout, interval)


def get(kubectl: Any, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    done = kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    return json.loads(done.stdout) if done.returncode == 0 else None


def wait_env_ready(kubectl: Any, namespace: str, name: str = "py", timeout: float = 120) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        env = get(kubectl, "nbenv", name, namespace)
        conds = ((env or {}).get("status") or {}).get("conditions", [])
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conds)
        return env if ok else None

    return wait_for(f"environment {namespace}/{name} Ready", ready, timeout)


def wait_env_reason(
    kubectl: Any, namespace: str, reason: str, name: str = "py", timeout: float = 60
) -> dict[str, Any]:
    """The environment once its Ready condition has this reason."""

    def reached() -> dict[str, Any] | None:
        env = get(kubectl, "nbenv", name, namespace)
        conds = ((env or {}).get("status") or {}).get("conditions", [])
        ready = next((c for c in conds if c["type"] == "Ready"), {})
        return env if ready.get("reason") == reason else None

    return wait_for(f"environment {namespace}/{name} Ready reason {reason}", reached, timeout)


FINISHED_STATES = ("Succeeded", "Failed", "Cancelled")


def wait_run_finished(kubectl: Any, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        obj = get(kubectl, "nbrun", name, namespace)
        state = ((obj or {}).get("status") or {}).get("state")
        return obj if state in FINISHED_STATES else None

    return wait_for(f"run {namespace}/{name} to finish", finished, timeout)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def events(kubectl: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    items = json.loads(
        kubectl(
            "get", "events", "-o", "json", f"--field-selector=involvedObject.name={name}", namespace=namespace
        ).stdout
    )["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def gateway_pods(kubectl: Any, namespace: str) -> list[str]:
    pods = kubectl.json(
        "get", "pods", "-l", f"app.kubernetes.io/name={GATEWAY_APP_NAME}", namespace=namespace
    )
    return [p["metadata"]["name"] for p in pods["items"] if (p.get("status") or {}).get("podIP")]


def gateway_address(kubectl: Any, namespace: str, pod: str, env: str = "py") -> tuple[str, str]:
    """(base URL, token) of a gateway pod's Kernel Gateway."""
    pod_ip = get(kubectl, "pod", pod, namespace)["status"]["podIP"]  # type: ignore[index]
    secret_name = get(kubectl, "nbenv", env, namespace)["status"]["tokenSecret"]  # type: ignore[index]
    secret = get(kubectl, "secret", secret_name, namespace)
    token = base64.b64decode(secret["data"]["token"]).decode()  # type: ignore[index]
    return f"http://{pod_ip}:{GATEWAY_PORT}", token


def gateway_api(
    kubectl: Any,
    namespace: str,
    pod: str,
    path: str,
    body: dict[str, Any] | None = None,
    env: str = "py",
    method: str | None = None,
) -> Any:
    """A request to the Kernel Gateway REST API of a gateway pod, with its environment's token (GET, or
    POST with a body, unless `method` says otherwise); its JSON answer, None when it has none."""
    url, token = gateway_address(kubectl, namespace, pod, env)
    request = urllib.request.Request(
        url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method or ("GET" if body is None else "POST"),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
        return json.loads(data) if data else None


def leave_kernel_busy(kubectl: Any, namespace: str, pod: str, env: str = "py") -> str:
    """Starts a kernel on a gateway pod, sets it running a cell that never ends and disconnects, as an
    operator killed mid-run does when its run is deleted meanwhile. Returns the kernel id."""
    url, token = gateway_address(kubectl, namespace, pod, env)

    async def leave() -> str:
        async with GatewayClient(url, token) as client:
            kernel_id = str((await client.start_kernel("python3"))["id"])
            connection = await client.connect(kernel_id)
            subscription = connection.subscribe("forever")
            code = "import time\nwhile True:\n    time.sleep(0.1)"
            await connection.send(
                "shell", "execute_request", {"code": code, "silent": False}, msg_id="forever"
            )
            while True:
                message = await subscription.get(30)
                assert message is not None, "the kernel never went busy"
                if message["header"]["msg_type"] == "execute_input":
                    break
            await connection.close()
            return kernel_id

    return asyncio.run(leave())
