"""Pure builders of the Kubernetes objects a NotebookEnvironment owns.

Gateway pods are managed through a Deployment: it gives self-healing, rollouts on spec changes
and the tooling users know (`kubectl rollout status`). The operator, not a Service, picks the
gateway pod for each kernel (by pod IP) so a kernel's websocket always reaches the pod that owns it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nbkube import API_VERSION
from nbkube.api import NotebookEnvironmentSpec
from nbkube.environment.podspec import DEFAULT_COMMAND, GATEWAY_PORT, RUN_AS_USER, TOKEN_KEY, gateway_pod
from nbkube.names import LABEL_MAX, is_label_value

__all__ = ["DEFAULT_COMMAND", "GATEWAY_PORT", "RUN_AS_USER", "TOKEN_KEY"]

ENVIRONMENT_LABEL = "nbkube.io/environment"
SPEC_HASH_ANNOTATION = "nbkube.io/spec-hash"
GATEWAY_APP_NAME = "nbkube-gateway"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def name_problem(env_name: str) -> str | None:
    """Why an environment of this name cannot be reconciled, or None. Its name is the value of the
    labels on everything it owns (gateway_labels, which select its gateway pods), and the API server
    refuses label values beyond 63 characters (names.LABEL_MAX); that is the narrowest limit a name
    meets. The names derived from it (the Deployment's and NetworkPolicy's "<name>-gateway", the token
    Secret's "<name>-gateway-token-<10 hex>") add at most 25 characters to a limit of 253 for object
    names, and pod names are cut to fit by the API server's generateName. No Service is made."""
    if not is_label_value(env_name):  # Kubernetes object names take no other character a label refuses
        return (
            f"the environment's name is {len(env_name)} characters long; at most {LABEL_MAX} fit "
            f"in the {ENVIRONMENT_LABEL} label of its gateway pods: use a shorter name"
        )
    return None


def token_secret_name(env_name: str, suffix: str) -> str:
    """The token Secret's name ends with a digest only the operator can compute (tokens.py): no Secret of
    that name exists before nbkube creates it."""
    return f"{env_name}-gateway-token-{suffix}"


def gateway_name(env_name: str) -> str:
    return f"{env_name}-gateway"


def gateway_labels(env_name: str) -> dict[str, str]:
    """Labels selecting one environment's gateway pods (stable across spec changes)."""
    return {
        "app.kubernetes.io/name": GATEWAY_APP_NAME,
        "app.kubernetes.io/instance": env_name,
        ENVIRONMENT_LABEL: env_name,
    }


def _common_labels(env_name: str) -> dict[str, str]:
    return {
        **gateway_labels(env_name),
        "app.kubernetes.io/component": "kernel-gateway",
        "app.kubernetes.io/part-of": "nbkube",
        "app.kubernetes.io/managed-by": "nbkube",
    }


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controlled_by(obj: Mapping[str, Any], uid: str) -> bool:
    """True when the object's controller ownerReference is the object of this uid."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


def _metadata(env_name: str, namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": _common_labels(env_name),
        "ownerReferences": [owner_reference("NotebookEnvironment", env_name, uid)],
    }


def spec_hash(spec: NotebookEnvironmentSpec, requirements: str | None = None) -> str:
    """A short digest of what the gateway pods are built from: the spec and, when it names a
    requirements ConfigMap, the digest of that ConfigMap's content (requirements.py); a change of
    either rolls the pods."""
    built_from: Any = spec.to_api()
    if requirements is not None:
        built_from = {"spec": built_from, "requirementsConfigMap": requirements}
    canonical = json.dumps(built_from, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def token_secret(env_name: str, namespace: str, uid: str, name: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(env_name, namespace, name, uid),
        "immutable": True,
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def gateway_deployment(
    env_name: str,
    namespace: str,
    uid: str,
    spec: NotebookEnvironmentSpec,
    token_secret: str,
    requirements: str | None = None,
) -> dict[str, Any]:
    """The gateway pods' Deployment; its pod spec comes from podspec.gateway_pod (check the spec's overlay
    with podspec.overlay_problems first). `requirements`: the digest of the requirements ConfigMap the
    spec names (see spec_hash)."""
    digest = spec_hash(spec, requirements)
    extra, pod_spec = gateway_pod(spec, token_secret)
    labels = gateway_labels(env_name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            **_metadata(env_name, namespace, gateway_name(env_name), uid),
            "annotations": {SPEC_HASH_ANNOTATION: digest},
        },
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": {**extra.get("labels", {}), **_common_labels(env_name)},
                    "annotations": {**extra.get("annotations", {}), SPEC_HASH_ANNOTATION: digest},
                },
                "spec": pod_spec,
            },
        },
    }


@dataclass(frozen=True)
class GatewayEgress:
    """Where gateway pods (arbitrary user code) may connect to.

    NetworkPolicy has no deny rules, so "anywhere but the operator and the API server" is written as
    allow rules: pods of every other namespace, pods of the operator's namespace lacking one of the
    operator's labels, and every address outside denied_cidrs (the API server's addresses; on CNIs whose
    ipBlock rules also match pod IPs, the pod and service CIDRs too), plus DNS.
    """

    allow_all: bool = False
    denied_cidrs: tuple[str, ...] = ()
    extra_rules: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def _ip_blocks(denied: Sequence[str]) -> list[dict[str, Any]]:
    networks = [ipaddress.ip_network(c, strict=False) for c in denied]
    blocks = []
    for everything in (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")):
        excepted = sorted({str(n) for n in networks if n.version == everything.version and n.prefixlen > 0})
        if any(n.version == everything.version and n.prefixlen == 0 for n in networks):
            continue  # the whole address family is denied
        block: dict[str, Any] = {"cidr": str(everything)}
        if excepted:
            block["except"] = excepted
        blocks.append({"ipBlock": block})
    return blocks


def gateway_egress_rules(
    operator_namespace: str, operator_labels: Mapping[str, str], egress: GatewayEgress
) -> list[dict[str, Any]] | None:
    """The gateway pods' egress rules; None when egress is not restricted at all (allow_all)."""
    if egress.allow_all:
        return None
    in_operator_namespace = {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}}
    peers: list[dict[str, Any]] = [
        {
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": NAMESPACE_NAME_LABEL, "operator": "NotIn", "values": [operator_namespace]}
                ]
            }
        },
        # not (all of the operator's labels) == any one of them missing or different
        *(
            {
                "namespaceSelector": in_operator_namespace,
                "podSelector": {"matchExpressions": [{"key": key, "operator": "NotIn", "values": [value]}]},
            }
            for key, value in sorted(operator_labels.items())
        ),
        *_ip_blocks(egress.denied_cidrs),
    ]
    dns = {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    return [dns, {"to": peers}, *(dict(rule) for rule in egress.extra_rules)]


def gateway_network_policy(
    env_name: str,
    namespace: str,
    uid: str,
    operator_namespace: str,
    operator_labels: Mapping[str, str],
    egress: GatewayEgress | None = None,
) -> dict[str, Any]:
    """Only the operator may reach the gateway port, and gateway pods may not reach the operator or the
    API server (GatewayEgress): kernel code is arbitrary user code."""
    egress_rules = gateway_egress_rules(operator_namespace, operator_labels, egress or GatewayEgress())
    spec: dict[str, Any] = {
        "podSelector": {"matchLabels": gateway_labels(env_name)},
        "policyTypes": ["Ingress"] if egress_rules is None else ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: operator_namespace}},
                        "podSelector": {"matchLabels": dict(operator_labels)},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
            }
        ],
    }
    if egress_rules is not None:
        spec["egress"] = egress_rules
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(env_name, namespace, gateway_name(env_name), uid),
        "spec": spec,
    }
