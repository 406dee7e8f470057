"""What the operator reads of a gateway pod from its watch events: the environment it serves (its
label), the spec it was built from (its annotation), whether it serves kernels, and why its packages
install failed. The kernel registry (nbkube.kernels) takes the result and knows nothing of labels."""

from __future__ import annotations

from typing import Any

from nbkube.environment.objects import ENVIRONMENT_LABEL, SPEC_HASH_ANNOTATION
from nbkube.environment.packages import install_failure
from nbkube.kernels import GatewayPod


def pod_from_body(body: dict[str, Any]) -> GatewayPod | None:
    """The gateway pod a pod object stands for; None for a pod of no environment."""
    meta = body.get("metadata", {})
    env = (meta.get("labels") or {}).get(ENVIRONMENT_LABEL)
    if not env:
        return None
    status = body.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return GatewayPod(
        namespace=meta.get("namespace", ""),
        environment=env,
        name=meta.get("name", ""),
        address=status.get("podIP") or "",
        ready=ready and status.get("phase") == "Running",
        terminating=bool(meta.get("deletionTimestamp")),
        spec_hash=(meta.get("annotations") or {}).get(SPEC_HASH_ANNOTATION),
        install_failure=install_failure(body),
    )
