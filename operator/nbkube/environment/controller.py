"""Reconciles a NotebookEnvironment into its token Secret, gateway Deployment and NetworkPolicy."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from nbkube import API_VERSION
from nbkube.api import ConditionStatus, NotebookEnvironmentSpec, NotebookEnvironmentStatus, Reason
from nbkube.api.common import Condition, set_condition, validation_message
from nbkube.config import Settings
from nbkube.environment import objects
from nbkube.kube import Kube, resource_path


class InvalidEnvironmentSpec(Exception):
    pass


def parse_spec(spec: dict[str, Any]) -> NotebookEnvironmentSpec:
    try:
        return NotebookEnvironmentSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise InvalidEnvironmentSpec(validation_message(exc)) from None


@dataclass
class KernelUsage:
    in_use: int = 0
    warm: int = 0


async def ensure_token_secret(kube: Kube, name: str, namespace: str, uid: str) -> str:
    """Creates the gateway token once; an existing token is kept so live kernels stay reachable."""
    path = resource_path("v1", "secrets", namespace, objects.token_secret_name(name))
    if await kube.get_or_none(path) is None:
        await kube.create(objects.token_secret(name, namespace, uid, secrets.token_hex(32)))
    return objects.token_secret_name(name)


async def apply_children(
    kube: Kube, settings: Settings, name: str, namespace: str, uid: str, spec: NotebookEnvironmentSpec
) -> dict[str, Any]:
    """Applies the Secret, Deployment and NetworkPolicy; returns the Deployment as stored."""
    await ensure_token_secret(kube, name, namespace, uid)
    await kube.apply(
        objects.gateway_network_policy(name, namespace, uid, settings.namespace, settings.operator_labels)
    )
    return await kube.apply(objects.gateway_deployment(name, namespace, uid, spec))


def compute_status(
    name: str,
    spec: NotebookEnvironmentSpec,
    generation: int | None,
    deployment: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    usage: KernelUsage,
) -> NotebookEnvironmentStatus:
    old = NotebookEnvironmentStatus.model_validate(previous or {})
    dep_status = (deployment or {}).get("status", {})
    ready = int(dep_status.get("readyReplicas") or 0)
    updated = int(dep_status.get("updatedReplicas") or 0)
    dep_generation = (deployment or {}).get("metadata", {}).get("generation")
    observed = dep_status.get("observedGeneration")
    rolling = deployment is not None and (observed != dep_generation or updated < spec.replicas)
    if spec.replicas == 0:
        status, reason, message = ConditionStatus.FALSE, Reason.GATEWAYS_NOT_READY, "scaled to zero replicas"
    elif ready >= spec.replicas and not rolling:
        status, reason, message = ConditionStatus.TRUE, Reason.GATEWAYS_READY, f"{ready} gateway pod(s) ready"
    elif rolling and ready > 0:
        status, reason = ConditionStatus.TRUE, Reason.ROLLING_OUT
        message = f"rolling out: {updated}/{spec.replicas} updated, {ready} ready"
    else:
        status, reason = ConditionStatus.FALSE, Reason.GATEWAYS_NOT_READY
        message = f"{ready}/{spec.replicas} gateway pod(s) ready"
    conditions = set_condition(old.conditions, "Ready", status, reason, message, generation)
    return NotebookEnvironmentStatus(
        observed_generation=generation,
        conditions=conditions,
        replicas=spec.replicas,
        ready_replicas=ready,
        ready=f"{ready}/{spec.replicas}",
        kernels={
            "in_use": usage.in_use,
            "warm": usage.warm,
            "capacity": spec.replicas * spec.max_kernels_per_pod,
        },
        token_secret=objects.token_secret_name(name),
        spec_hash=objects.spec_hash(spec),
    )


def invalid_status(previous: dict[str, Any] | None, generation: int | None, message: str) -> dict[str, Any]:
    old = NotebookEnvironmentStatus.model_validate(previous or {})
    conditions: list[Condition] = set_condition(
        old.conditions, "Ready", ConditionStatus.FALSE, Reason.INVALID_SPEC, message, generation
    )
    return old.model_copy(update={"conditions": conditions, "observed_generation": generation}).to_api()


def environment_path(namespace: str, name: str) -> str:
    return resource_path(API_VERSION, "notebookenvironments", namespace, name)
