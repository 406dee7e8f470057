"""Helpers of the NotebookSession tests: manifests, waiting for Ready, executing through the user API."""

from __future__ import annotations

import json
from typing import Any

from helpers import get, wait_for
from nbkube_testenv.userapi import ApiUser


def session(name: str, cells: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    """A NotebookSession of environment "py", from inline cells c0, c1, ... (or spec.notebook)."""
    notebook: dict[str, Any] = dict(spec.pop("notebook", {}))
    if cells is not None:
        notebook["cells"] = [{"id": f"c{i}", "source": source} for i, source in enumerate(cells)]
    body: dict[str, Any] = {"environmentRef": {"name": "py"}, **spec}
    if notebook:
        body["notebook"] = notebook
    return {
        "apiVersion": "nbkube.io/v1alpha1",
        "kind": "NotebookSession",
        "metadata": {"name": name},
        "spec": body,
    }


def wait_ready(kubectl: Any, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get(kubectl, "nbsess", name, namespace)
        status = (obj or {}).get("status") or {}
        if status.get("state") == "Ended":
            raise AssertionError(f"session ended: {json.dumps(status)}")
        return obj if status.get("state") == "Ready" else None

    return wait_for(f"session {namespace}/{name} to be Ready", ready, timeout=timeout)


def execute(
    user: ApiUser, namespace: str, name: str, **body: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """An execution's events and its result (AssertionError when it ends with an error)."""
    events = list(user.session_execute(namespace, name, body))
    assert events and events[-1]["type"] == "result", events[-3:]
    return events[:-1], events[-1]["result"]
