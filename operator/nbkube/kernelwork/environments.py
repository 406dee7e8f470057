"""The environment a piece of work runs in: its spec, read once at the start, and why it is not
ready (its Ready condition), for the messages of work that waits for it."""

from __future__ import annotations

from pydantic import ValidationError

from nbkube.api import NotebookEnvironmentSpec, Reason
from nbkube.kernelwork.failures import Failure
from nbkube.kube import Kube, environment_path


def foreign_environment(kind: str, namespace: str, ref_namespace: str | None, name: str) -> Failure | None:
    """Work may only use environments of its own namespace: a Failure when `ref_namespace` is another."""
    if ref_namespace and ref_namespace != namespace:
        return Failure(
            Reason.ENVIRONMENT_NOT_ALLOWED,
            f"environment {ref_namespace}/{name} is in another namespace: "
            f"a {kind} may only use environments in its own namespace ({namespace})",
        )
    return None


async def environment_spec(kube: Kube, namespace: str, name: str) -> NotebookEnvironmentSpec | Failure:
    body = await kube.get_or_none(environment_path(namespace, name))
    if body is None:
        return Failure(Reason.ENVIRONMENT_NOT_FOUND, f"NotebookEnvironment {namespace}/{name} not found")
    try:
        return NotebookEnvironmentSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return Failure(
            Reason.ENVIRONMENT_NOT_FOUND, f"environment {name} is invalid: {exc.errors()[0]['msg']}"
        )


async def not_ready_detail(kube: Kube, namespace: str, name: str) -> str | None:
    """What the environment's Ready condition says when it is not ready (e.g. PackagesFailed)."""
    body = await kube.get_or_none(environment_path(namespace, name))
    for condition in ((body or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "False":
            return f"{condition.get('reason')}: {condition.get('message')}"
    return None
