"""Reconciles a NotebookEnvironment into its NetworkPolicy, token Secret and gateway Deployment.

Children are never taken over: an object of a child's name is created if absent and changed only when
its controller ownerReference is this environment; any other is left exactly as it is (ChildConflict).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from nbkube.api import ConditionStatus, NotebookEnvironmentSpec, NotebookEnvironmentStatus, Reason
from nbkube.api.common import Condition, set_condition, validation_message
from nbkube.config import Settings
from nbkube.environment import objects, packages, podspec
from nbkube.environment.tokens import GatewayTokens
from nbkube.kube import Conflict, Kube, KubeError, path_of

# Waiting reasons of containers that are merely on their way (anything else is worth naming).
STARTING_REASONS = ("ContainerCreating", "PodInitializing")
# Warning events of a pod that say why its containers are not created (a kubelet's, for volumes).
POD_PROBLEM_EVENTS = ("FailedMount", "FailedAttachVolume", "FailedCreatePodSandBox")
MAX_PROBLEM_CHARS = 1000


class InvalidEnvironmentSpec(Exception):
    pass


class ChildConflict(Exception):
    """An object of a child's name exists and this environment does not control it."""

    def __init__(self, kind: str, namespace: str, name: str, owner: str) -> None:
        super().__init__(
            f"{kind} {namespace}/{name} already exists and is not controlled by this NotebookEnvironment "
            f"({owner}); nbkube leaves it unchanged: delete or rename it, or rename the environment"
        )
        self.kind = kind
        self.name = name


def check_name(name: str) -> None:
    problem = objects.name_problem(name)
    if problem is not None:
        raise InvalidEnvironmentSpec(problem)


def parse_spec(spec: dict[str, Any]) -> NotebookEnvironmentSpec:
    """The spec as a model, its pod-template overlay checked; InvalidEnvironmentSpec says why not."""
    try:
        parsed = NotebookEnvironmentSpec.model_validate(dict(spec))
    except ValidationError as exc:
        raise InvalidEnvironmentSpec(validation_message(exc)) from None
    problems = podspec.overlay_problems(parsed)
    if problems:
        raise InvalidEnvironmentSpec("spec." + "; spec.".join(problems))
    return parsed


@dataclass
class KernelUsage:
    in_use: int = 0
    warm: int = 0


def _owner(obj: dict[str, Any]) -> str:
    refs = [r for r in (obj.get("metadata") or {}).get("ownerReferences") or [] if r.get("controller")]
    if not refs:
        return "it has no controller"
    ref = refs[0]
    return f"its controller is {ref.get('kind')} {ref.get('name')} uid {ref.get('uid')}"


def check_controlled(obj: dict[str, Any], uid: str) -> None:
    if not objects.controlled_by(obj, uid):
        meta = obj["metadata"]
        raise ChildConflict(obj.get("kind", "object"), meta.get("namespace", ""), meta["name"], _owner(obj))


async def claim(kube: Kube, desired: dict[str, Any], uid: str) -> dict[str, Any]:
    """Creates the child if absent, else server-side applies it if (and only if) this environment
    controls it; the apply is conditional on the resourceVersion checked, so an object replaced between
    the check and the apply is not overwritten. Raises ChildConflict for anyone else's object."""
    path = path_of(desired)
    existing = await kube.get_or_none(path)
    if existing is None:
        try:
            return await kube.create(desired)
        except Conflict:  # created meanwhile: check it like any existing object
            existing = await kube.get(path)
    existing.setdefault("kind", desired["kind"])
    check_controlled(existing, uid)
    conditional = {
        **desired,
        "metadata": {**desired["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]},
    }
    return await kube.apply(conditional)


async def ensure_token_secret(kube: Kube, tokens: GatewayTokens, name: str, namespace: str, uid: str) -> str:
    """Creates the token Secret (create only: the operator may not read Secrets). Its name needs the
    operator key, so an existing Secret of that name is the one nbkube created earlier."""
    secret_name = tokens.secret_name(namespace, name, uid)
    secret = objects.token_secret(name, namespace, uid, secret_name, tokens.token(namespace, name, uid))
    try:
        await kube.create(secret)
    except Conflict:
        pass
    return secret_name


async def apply_children(
    kube: Kube,
    settings: Settings,
    tokens: GatewayTokens,
    egress: objects.GatewayEgress,
    name: str,
    namespace: str,
    uid: str,
    spec: NotebookEnvironmentSpec,
    requirements: str | None = None,
) -> dict[str, Any]:
    """The NetworkPolicy first (no gateway pod runs unfenced), then the token Secret and the Deployment
    (`requirements`: the digest of the spec's requirements ConfigMap); returns the Deployment as stored.
    Raises ChildConflict, having changed nothing it does not control."""
    await claim(
        kube,
        objects.gateway_network_policy(
            name, namespace, uid, settings.namespace, settings.operator_labels, egress
        ),
        uid,
    )
    deployment = objects.gateway_deployment(
        name, namespace, uid, spec, tokens.secret_name(namespace, name, uid), requirements
    )
    # Checked before the Secret is created, so that a conflict leaves no Secret behind needlessly.
    existing = await kube.get_or_none(path_of(deployment))
    if existing is not None:
        check_controlled({"kind": "Deployment", **existing}, uid)
    await ensure_token_secret(kube, tokens, name, namespace, uid)
    try:
        return await claim(kube, deployment, uid)
    except KubeError as exc:
        if exc.status not in (400, 422):  # 400: a field of the wrong type; 422: an invalid value
            raise
        # What the models cannot see (in the free-form overlay, say): the user's to fix.
        raise InvalidEnvironmentSpec(
            f"the API server refused the gateway Deployment: {exc.message}"
        ) from None


def _waiting(pod: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(container, reason, message) of each of the pod's containers waiting for a reason worth naming."""
    status = pod.get("status") or {}
    found = []
    for entry in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (entry.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        if reason and reason not in STARTING_REASONS:
            found.append((entry.get("name", "?"), reason, waiting.get("message") or ""))
    return found


def pod_problem(
    pods: list[dict[str, Any]], events: dict[str, list[dict[str, Any]]], current_hash: str
) -> str | None:
    """Why a gateway pod of the current spec does not start, from what the scheduler and the kubelet
    report: a PodScheduled=False message (no node with the resources, an unbound or missing claim), a
    container waiting for a reason (CreateContainerConfigError: a missing ConfigMap, Secret or key;
    ImagePullBackOff; CrashLoopBackOff), or the pod's FailedMount warning events (a missing volume
    source). `events` maps pod names to their events. None when no pod says anything."""
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        if (meta.get("annotations") or {}).get(objects.SPEC_HASH_ANNOTATION) != current_hash:
            continue
        name = meta.get("name", "?")
        conditions = (pod.get("status") or {}).get("conditions") or []
        scheduled: dict[str, Any] = next((c for c in conditions if c.get("type") == "PodScheduled"), {})
        if scheduled.get("status") == "False":
            return _clip(
                f"pod {name} is not scheduled: {scheduled.get('message') or scheduled.get('reason')}"
            )
        for container, reason, message in _waiting(pod):
            return _clip(f"pod {name}: container {container} {reason}: {message}".rstrip(": "))
        warnings = [
            e
            for e in events.get(name, [])
            if e.get("type") == "Warning" and e.get("reason") in POD_PROBLEM_EVENTS
        ]
        if warnings:
            latest = max(warnings, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
            return _clip(f"pod {name}: {latest['reason']}: {latest.get('message', '')}")
    return None


def replica_failure(deployment: dict[str, Any] | None) -> str | None:
    """Why the Deployment cannot create pods (a missing ServiceAccount or PriorityClass, a quota)."""
    conditions = ((deployment or {}).get("status") or {}).get("conditions") or []
    failure: dict[str, Any] = next((c for c in conditions if c.get("type") == "ReplicaFailure"), {})
    if failure.get("status") == "True":
        return _clip(f"gateway pods cannot be created: {failure.get('message') or failure.get('reason')}")
    return None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_CHARS else text[: MAX_PROBLEM_CHARS - 1] + "…"


def compute_status(
    token_secret: str,
    spec: NotebookEnvironmentSpec,
    generation: int | None,
    deployment: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    usage: KernelUsage,
    install_failures: Sequence[tuple[str, str]] = (),
    problem: str | None = None,
    template_hash: str | None = None,
) -> NotebookEnvironmentStatus:
    """install_failures: (pod, pip's decisive line) of the pods of this spec whose packages install
    failed; any makes the environment Ready=False, PackagesFailed. `problem` (pod_problem,
    replica_failure) says why pods are missing and ends the Ready message while not every pod is ready.
    template_hash: the spec hash the pods are built with (objects.spec_hash), the spec's alone if None."""
    old = NotebookEnvironmentStatus.model_validate(previous or {})
    dep_status = (deployment or {}).get("status", {})
    ready = int(dep_status.get("readyReplicas") or 0)
    updated = int(dep_status.get("updatedReplicas") or 0)
    dep_generation = (deployment or {}).get("metadata", {}).get("generation")
    observed = dep_status.get("observedGeneration")
    rolling = deployment is not None and (observed != dep_generation or updated < spec.replicas)
    if spec.replicas == 0:
        status, reason, message = ConditionStatus.FALSE, Reason.GATEWAYS_NOT_READY, "scaled to zero replicas"
    elif install_failures:
        status, reason = ConditionStatus.FALSE, Reason.PACKAGES_FAILED
        message = packages.failure_message(*install_failures[0])
        if ready:
            message += f"; {ready} ready gateway pod(s) (of this spec or the previous one) serve kernels"
    elif ready >= spec.replicas and not rolling:
        status, reason, message = ConditionStatus.TRUE, Reason.GATEWAYS_READY, f"{ready} gateway pod(s) ready"
    elif rolling and ready > 0:
        status, reason = ConditionStatus.TRUE, Reason.ROLLING_OUT
        message = f"rolling out: {updated}/{spec.replicas} updated, {ready} ready"
    else:
        status, reason = ConditionStatus.FALSE, Reason.GATEWAYS_NOT_READY
        message = f"{ready}/{spec.replicas} gateway pod(s) ready"
    if problem and reason != Reason.GATEWAYS_READY and spec.replicas:
        message = f"{message}; {problem}"
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
        token_secret=token_secret,
        spec_hash=template_hash or objects.spec_hash(spec),
    )


def not_ready_status(
    previous: dict[str, Any] | None, generation: int | None, reason: Reason, message: str
) -> dict[str, Any]:
    """The previous status with Ready=False for a reason nbkube cannot fix by itself."""
    old = NotebookEnvironmentStatus.model_validate(previous or {})
    conditions: list[Condition] = set_condition(
        old.conditions, "Ready", ConditionStatus.FALSE, reason, message, generation
    )
    return old.model_copy(update={"conditions": conditions, "observed_generation": generation}).to_api()


def ready_condition(status: dict[str, Any] | None) -> dict[str, Any]:
    conditions = (status or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), {})
