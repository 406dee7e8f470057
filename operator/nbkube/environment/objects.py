"""Pure builders of the Kubernetes objects a NotebookEnvironment owns.

Gateway pods are managed through a Deployment: it gives self-healing, rollouts on spec changes
and the tooling users know (`kubectl rollout status`). The operator, not a Service, picks the
gateway pod for each kernel (by pod IP) so a kernel's websocket always reaches the pod that owns it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from nbkube import API_VERSION
from nbkube.api import NotebookEnvironmentSpec

GATEWAY_PORT = 8888
TOKEN_KEY = "token"
ENVIRONMENT_LABEL = "nbkube.io/environment"
SPEC_HASH_ANNOTATION = "nbkube.io/spec-hash"
DEFAULT_COMMAND = ["python", "-m", "nbkube.gateway"]
RUN_AS_USER = 1000
GATEWAY_APP_NAME = "nbkube-gateway"


def token_secret_name(env_name: str) -> str:
    return f"{env_name}-gateway-token"


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


def _metadata(env_name: str, namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": _common_labels(env_name),
        "ownerReferences": [owner_reference("NotebookEnvironment", env_name, uid)],
    }


def spec_hash(spec: NotebookEnvironmentSpec) -> str:
    """A short digest of what the gateway pods are built from; a change rolls the pods."""
    canonical = json.dumps(spec.to_api(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def token_secret(env_name: str, namespace: str, uid: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(env_name, namespace, token_secret_name(env_name), uid),
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def gateway_deployment(
    env_name: str, namespace: str, uid: str, spec: NotebookEnvironmentSpec
) -> dict[str, Any]:
    digest = spec_hash(spec)
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "KG_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "KG_PORT", "value": str(GATEWAY_PORT)},
        {
            "name": "KG_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": token_secret_name(env_name), "key": TOKEN_KEY}},
        },
        {"name": "KG_DEFAULT_KERNEL_NAME", "value": spec.kernel_name},
        {"name": "KG_MAX_KERNELS", "value": str(spec.max_kernels_per_pod)},
        {"name": "KG_LIST_KERNELS", "value": "True"},
        {"name": "JUPYTER_RUNTIME_DIR", "value": "/tmp/jupyter-runtime"},
    ]
    env += [{"name": e.name, "value": e.value} for e in spec.env]
    args = [f"--MappingKernelManager.cull_idle_timeout={spec.idle_kernel_timeout_seconds}"]
    if spec.idle_kernel_timeout_seconds:
        args.append("--MappingKernelManager.cull_interval=60")
    probe_base = {"tcpSocket": {"port": GATEWAY_PORT}}
    container: dict[str, Any] = {
        "name": "gateway",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(spec.command) or list(DEFAULT_COMMAND),
        "args": args,
        "env": env,
        "ports": [{"name": "gateway", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "readinessProbe": {**probe_base, "periodSeconds": 2, "failureThreshold": 3},
        "livenessProbe": {
            **probe_base,
            "periodSeconds": 10,
            "failureThreshold": 6,
            "initialDelaySeconds": 10,
        },
        "resources": spec.resources.to_api(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "home", "mountPath": "/home/nbkube"}],
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "home", "emptyDir": {}}],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
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
                    "labels": _common_labels(env_name),
                    "annotations": {SPEC_HASH_ANNOTATION: digest},
                },
                "spec": pod_spec,
            },
        },
    }


def gateway_network_policy(
    env_name: str, namespace: str, uid: str, operator_namespace: str, operator_labels: dict[str, str]
) -> dict[str, Any]:
    """Only the operator may reach the gateway port: kernel code is arbitrary user code."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(env_name, namespace, gateway_name(env_name), uid),
        "spec": {
            "podSelector": {"matchLabels": gateway_labels(env_name)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
                            },
                            "podSelector": {"matchLabels": dict(operator_labels)},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": GATEWAY_PORT}],
                }
            ],
        },
    }
