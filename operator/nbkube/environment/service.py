"""The NotebookEnvironment controller as the handlers call it."""

from __future__ import annotations

import time
from typing import Any

import kopf

from nbkube.api import Reason
from nbkube.config import Settings
from nbkube.environment import controller, objects
from nbkube.gateways import EnvironmentSettings, GatewayRegistry
from nbkube.kube import Kube, resource_path
from nbkube.metrics import kernels as kernels_gauge
from nbkube.metrics import reconcile_time, reconcile_total


class EnvironmentService:
    def __init__(self, kube: Kube, settings: Settings, registry: GatewayRegistry) -> None:
        self.kube = kube
        self.settings = settings
        self.registry = registry

    async def reconcile(self, body: kopf.Body) -> dict[str, Any]:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        uid, generation = body["metadata"]["uid"], body["metadata"].get("generation")
        started = time.monotonic()
        try:
            spec = controller.parse_spec(body.get("spec") or {})
        except controller.InvalidEnvironmentSpec as exc:
            reconcile_total.labels("notebookenvironment", "invalid").inc()
            kopf.warn(body, reason=Reason.INVALID_SPEC, message=str(exc))
            raise kopf.PermanentError(f"{Reason.INVALID_SPEC}: {exc}") from None
        await self.registry.configure(
            namespace,
            name,
            EnvironmentSettings(spec.kernel_name, spec.warm_kernels, spec.max_kernels_per_pod),
        )
        try:
            deployment = await controller.apply_children(self.kube, self.settings, name, namespace, uid, spec)
        except Exception:
            reconcile_total.labels("notebookenvironment", "error").inc()
            raise
        finally:
            reconcile_time.labels("notebookenvironment").observe(time.monotonic() - started)
        reconcile_total.labels("notebookenvironment", "success").inc()
        kopf.info(
            body, reason="Reconciled", message=f"gateway Deployment {objects.gateway_name(name)} applied"
        )
        return self._status(name, namespace, spec, generation, deployment, body.get("status"))

    async def refresh_status(self, body: kopf.Body) -> dict[str, Any] | None:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        try:
            spec = controller.parse_spec(body.get("spec") or {})
        except controller.InvalidEnvironmentSpec:
            return None
        deployment = await self.kube.get_or_none(
            resource_path("apps/v1", "deployments", namespace, objects.gateway_name(name))
        )
        status = self._status(
            name, namespace, spec, body["metadata"].get("generation"), deployment, body.get("status")
        )
        return None if _same(status, body.get("status") or {}) else status

    def _status(
        self,
        name: str,
        namespace: str,
        spec: Any,
        generation: int | None,
        deployment: dict[str, Any] | None,
        previous: dict[str, Any] | None,
    ) -> dict[str, Any]:
        in_use, warm = self.registry.usage(namespace, name)
        kernels_gauge.labels(f"{namespace}/{name}", "busy").set(in_use)
        kernels_gauge.labels(f"{namespace}/{name}", "warm").set(warm)
        usage = controller.KernelUsage(in_use=in_use, warm=warm)
        return controller.compute_status(name, spec, generation, deployment, previous, usage).to_api()

    def forget(self, namespace: str, name: str) -> None:
        self.registry.forget_environment(namespace, name)


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    def strip(status: dict[str, Any]) -> dict[str, Any]:
        conds = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions", [])
        ]
        return {**status, "conditions": conds}

    return strip(new) == strip(old)
