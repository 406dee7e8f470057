"""Small helpers for the operator's integration tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

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


def wait_run_finished(kubectl: Any, namespace: str, name: str, timeout: float = 180) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        obj = get(kubectl, "nbrun", name, namespace)
        state = ((obj or {}).get("status") or {}).get("state")
        return obj if state in ("Succeeded", "Failed", "Cancelled") else None

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
