"""The NotebookEnvironment controller as the handlers call it."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import kopf

from nbkube.api import Reason
from nbkube.config import Settings
from nbkube.environment import controller, objects, pods, requirements
from nbkube.environment.tokens import GatewayTokens
from nbkube.kernels import EnvironmentSettings, KernelRegistry
from nbkube.kube import Kube, KubeError, environment_path, resource_path
from nbkube.metrics import kernels as kernels_gauge
from nbkube.metrics import reconcile_time, reconcile_total

log = logging.getLogger(__name__)

# Pods whose events are read per status refresh, at most (the first few not-ready pods say enough).
EVENT_READS = 3


def gateway_egress(settings: Settings, api_server_url: str) -> objects.GatewayEgress:
    """The gateway pods' egress as configured, with the API server address the operator itself uses
    denied too when it is an IP address (in a pod: the kubernetes Service's cluster IP)."""
    denied = list(settings.gateway_egress_denied_cidrs)
    host = urlsplit(api_server_url).hostname or ""
    try:
        denied.append(str(ipaddress.ip_network(host)))
    except ValueError:
        pass  # a host name: only the configured addresses are denied
    return objects.GatewayEgress(
        allow_all=settings.gateway_egress_allow_all,
        denied_cidrs=tuple(dict.fromkeys(denied)),
        extra_rules=tuple(settings.gateway_egress_extra_rules),
    )


class EnvironmentService:
    def __init__(
        self, kube: Kube, settings: Settings, registry: KernelRegistry, tokens: GatewayTokens
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.registry = registry
        self.tokens = tokens
        self.egress = gateway_egress(settings, kube.server)
        self.requirements = requirements.RequirementsIndex()

    async def reconcile(self, body: kopf.Body) -> dict[str, Any]:
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        uid, generation = body["metadata"]["uid"], body["metadata"].get("generation")
        previous = body.get("status")
        started = time.monotonic()
        try:
            controller.check_name(name)
            spec = controller.parse_spec(body.get("spec") or {})
        except controller.InvalidEnvironmentSpec as exc:
            return self._invalid(body, previous, generation, exc)
        await self.registry.configure(
            namespace,
            name,
            EnvironmentSettings(spec.kernel_name, spec.warm_kernels, spec.max_kernels_per_pod),
        )
        config_map = requirements.config_map_name(spec)
        self.requirements.track(namespace, name, config_map)  # before the read: no change missed
        try:
            digest = await self._read_requirements(namespace, config_map)
            deployment = await controller.apply_children(
                self.kube, self.settings, self.tokens, self.egress, name, namespace, uid, spec, digest
            )
        except controller.InvalidEnvironmentSpec as exc:  # the API server refused the Deployment
            return self._invalid(body, previous, generation, exc)
        except controller.ChildConflict as exc:
            reconcile_total.labels("notebookenvironment", "conflict").inc()
            was = controller.ready_condition(previous)
            if (was.get("reason"), was.get("message")) != (Reason.CHILD_CONFLICT, str(exc)):
                kopf.warn(body, reason=Reason.CHILD_CONFLICT, message=str(exc))
            return controller.not_ready_status(previous, generation, Reason.CHILD_CONFLICT, str(exc))
        except Exception:
            reconcile_total.labels("notebookenvironment", "error").inc()
            raise
        finally:
            reconcile_time.labels("notebookenvironment").observe(time.monotonic() - started)
        if config_map is not None and digest is not None:
            self.requirements.built(namespace, name, config_map, digest)
        reconcile_total.labels("notebookenvironment", "success").inc()
        kopf.info(
            body, reason="Reconciled", message=f"gateway Deployment {objects.gateway_name(name)} applied"
        )
        template = objects.spec_hash(spec, digest)
        status = await self._status(name, namespace, uid, spec, generation, deployment, previous, template)
        _warn_on_failed_install(body, previous, status)
        return status

    async def _read_requirements(self, namespace: str, config_map: str | None) -> str | None:
        """The digest of the requirements ConfigMap's content (ABSENT while it does not exist), or None
        when the spec names none."""
        if config_map is None:
            return None
        found = await self.kube.get_or_none(resource_path("v1", "configmaps", namespace, config_map))
        return requirements.config_map_digest(found)

    async def config_map_changed(self, event_type: str | None, config_map: Mapping[str, Any]) -> None:
        """A ConfigMap watch event: when an environment's requirements ConfigMap changed (or was
        created or deleted) since its pods were built, its Deployment is applied again, which rolls
        them. Any other ConfigMap costs a dictionary lookup."""
        meta = config_map.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        if not self.requirements.used(namespace, name):
            return
        gone = event_type == "DELETED"
        digest = requirements.config_map_digest(None if gone else config_map)
        for environment in self.requirements.seen(namespace, name, digest):
            await self._rebuild(namespace, environment, name, gone)

    async def _rebuild(self, namespace: str, name: str, config_map: str, gone: bool) -> None:
        found = await self.kube.get_or_none(environment_path(namespace, name))
        if found is None or found["metadata"].get("deletionTimestamp"):
            return
        body = kopf.Body(cast(kopf.RawBody, found))
        what = "was deleted" if gone else "changed"
        kopf.info(
            body,
            reason="RequirementsChanged",
            message=f"requirements ConfigMap {config_map} {what}: the gateway pods roll",
        )
        try:
            status = await self.reconcile(body)
            await self.kube.merge_patch(environment_path(namespace, name, "status"), {"status": status})
        except Exception as exc:  # the status timer applies it again (RequirementsIndex.behind)
            log.warning(
                "environment %s/%s: applying its changed requirements ConfigMap %s failed, retried within "
                "seconds: %s",
                namespace,
                name,
                config_map,
                exc,
            )

    def _invalid(
        self, body: kopf.Body, previous: dict[str, Any] | None, generation: int | None, exc: Exception
    ) -> dict[str, Any]:
        reconcile_total.labels("notebookenvironment", "invalid").inc()
        kopf.warn(body, reason=Reason.INVALID_SPEC, message=str(exc))
        return controller.not_ready_status(previous, generation, Reason.INVALID_SPEC, str(exc))

    async def refresh_status(self, body: kopf.Body) -> dict[str, Any] | None:
        """The status from the gateway Deployment; while a child's name is taken by someone else's
        object (ChildConflict), or once the Deployment is, a full reconcile instead, so the environment
        recovers by itself when that object goes."""
        name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
        uid = body["metadata"]["uid"]
        if body["metadata"].get("deletionTimestamp"):
            return None
        try:
            controller.check_name(name)
            spec = controller.parse_spec(body.get("spec") or {})
        except controller.InvalidEnvironmentSpec:
            return None
        previous = body.get("status") or {}
        refused = controller.ready_condition(previous).get("reason") == Reason.INVALID_SPEC
        if refused and previous.get("observedGeneration") == body["metadata"].get("generation"):
            return None  # the API server refused this generation's Deployment: a spec change retries
        deployment = await self.kube.get_or_none(
            resource_path("apps/v1", "deployments", namespace, objects.gateway_name(name))
        )
        conflicting = controller.ready_condition(previous).get("reason") == Reason.CHILD_CONFLICT
        foreign = deployment is not None and not objects.controlled_by(deployment, uid)
        if conflicting or foreign or self._requirements_behind(namespace, name, spec):
            status = await self.reconcile(body)
        else:
            template = objects.spec_hash(spec, self.requirements.built_digest(namespace, name))
            status = await self._status(
                name, namespace, uid, spec, body["metadata"].get("generation"), deployment, previous, template
            )
            _warn_on_failed_install(body, previous, status)
        return None if _same(status, previous) else status

    def _requirements_behind(self, namespace: str, name: str, spec: Any) -> bool:
        """The spec names a requirements ConfigMap and the Deployment was not applied with its latest
        content seen (a rebuild that failed, or none since the operator started)."""
        if requirements.config_map_name(spec) is None:
            return False
        return self.requirements.built_digest(namespace, name) is None or self.requirements.behind(
            namespace, name
        )

    async def _status(
        self,
        name: str,
        namespace: str,
        uid: str,
        spec: Any,
        generation: int | None,
        deployment: dict[str, Any] | None,
        previous: dict[str, Any] | None,
        template_hash: str,
    ) -> dict[str, Any]:
        in_use, warm = self.registry.usage(namespace, name)
        kernels_gauge.labels(f"{namespace}/{name}", "busy").set(in_use)
        kernels_gauge.labels(f"{namespace}/{name}", "warm").set(warm)
        usage = controller.KernelUsage(in_use=in_use, warm=warm)
        token_secret = self.tokens.secret_name(namespace, name, uid)
        failures = [
            (pod.name, pod.install_failure or "")
            for pod in self.registry.install_failures(namespace, name, template_hash)
        ]
        problem = await self._pod_problem(name, namespace, spec, deployment, template_hash)
        return controller.compute_status(
            token_secret, spec, generation, deployment, previous, usage, failures, problem, template_hash
        ).to_api()

    async def _pod_problem(
        self, name: str, namespace: str, spec: Any, deployment: dict[str, Any] | None, current: str
    ) -> str | None:
        """Why gateway pods of the current spec are not ready, while some are not (see pod_problem)."""
        dep_status = (deployment or {}).get("status") or {}
        ready = int(dep_status.get("readyReplicas") or 0)
        updated = int(dep_status.get("updatedReplicas") or 0)
        if deployment is None or not spec.replicas or (ready >= spec.replicas and updated >= spec.replicas):
            return None
        pods = await self.kube.list(
            resource_path("v1", "pods", namespace), label_selector=f"{objects.ENVIRONMENT_LABEL}={name}"
        )
        problem = controller.pod_problem(pods, {}, current)
        if problem is None:
            events: dict[str, list[dict[str, Any]]] = {}
            for pod in [p for p in pods if _starting(p, current)][:EVENT_READS]:
                pod_name = pod["metadata"]["name"]
                events[pod_name] = await self._warnings(namespace, pod_name)
            problem = controller.pod_problem(pods, events, current)
        return problem or controller.replica_failure(deployment)

    async def _warnings(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.kind=Pod,involvedObject.name={pod},type=Warning"
        try:
            found = await self.kube.call(
                "GET", resource_path("v1", "events", namespace), query=[("fieldSelector", selector)]
            )
        except KubeError as exc:  # e.g. an RBAC without `list` on events: the condition says less
            log.debug("events of pod %s/%s not read: %s", namespace, pod, exc)
            return []
        return list(found.get("items") or [])

    async def observe_pod(self, event_type: str, body: dict[str, Any]) -> None:
        """Feeds a gateway pod's watch event to the kernel registry."""
        pod = pods.pod_from_body(body)
        if pod is not None:
            await self.registry.observe(event_type, pod)

    def forget(self, namespace: str, name: str) -> None:
        self.registry.forget_environment(namespace, name)
        self.requirements.forget(namespace, name)


def _starting(pod: dict[str, Any], current_hash: str) -> bool:
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    if (meta.get("annotations") or {}).get(objects.SPEC_HASH_ANNOTATION) != current_hash:
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _warn_on_failed_install(body: kopf.Body, previous: dict[str, Any] | None, status: dict[str, Any]) -> None:
    """A Warning event when the environment turns PackagesFailed, or fails differently."""
    now, was = controller.ready_condition(status), controller.ready_condition(previous)
    if now.get("reason") != Reason.PACKAGES_FAILED:
        return
    if (was.get("reason"), was.get("message")) != (now.get("reason"), now.get("message")):
        kopf.warn(body, reason=Reason.PACKAGES_FAILED, message=now.get("message", ""))


def _same(new: dict[str, Any], old: dict[str, Any]) -> bool:
    def strip(status: dict[str, Any]) -> dict[str, Any]:
        conds = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions", [])
        ]
        return {**status, "conditions": conds}

    return strip(new) == strip(old)
