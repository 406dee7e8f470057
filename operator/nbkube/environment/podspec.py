"""The gateway pods' spec: nbkube's hardened gateway container, the user's data volumes, env and
placement, and the pod-template overlay merged on top (pure functions returning dicts).

nbkube owns what keeps kernels fenced in and the operator able to reach them: the gateway container's
command, args, ports, probes, image and securityContext, its KG_* env and token, its own volumes
(nbkube-*), the pod's non-root and seccomp settings, host namespaces, and the ServiceAccount token
staying unmounted unless the spec opts in. overlay_problems() says how an overlay would change any of
that; the controller refuses such a spec (InvalidSpec) before it touches anything.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from nbkube.api import NotebookEnvironmentSpec
from nbkube.api.pod import (
    HOME_MOUNT_PATH,
    HOME_VOLUME,
    NBKUBE_ENV_PREFIX,
    NBKUBE_MOUNT_PATHS,
    NBKUBE_VOLUME_PREFIX,
    TMP_MOUNT_PATH,
    TMP_VOLUME,
    env_name_problem,
)
from nbkube.environment import packages

GATEWAY_CONTAINER = "gateway"
GATEWAY_PORT = 8888
TOKEN_KEY = "token"
DEFAULT_COMMAND = ["python", "-m", "nbkube.gateway"]
RUN_AS_USER = 1000
JUPYTER_RUNTIME_DIR = f"{TMP_MOUNT_PATH}/jupyter-runtime"

# How the overlay's lists merge onto ours: by this key item by item (new items appended); appended
# whole; any other list replaces ours.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
}
APPENDED = ("tolerations", "envFrom", "topologySpreadConstraints")
# The gateway container's fields only nbkube sets.
GATEWAY_OWNED = (
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "ports",
    "readinessProbe",
    "livenessProbe",
    "startupProbe",
    "securityContext",
)
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")


def _k8s(model: BaseModel) -> dict[str, Any]:
    """A model as its Kubernetes object: what was given, nothing defaulted to empty."""
    return model.model_dump(by_alias=True, exclude_defaults=True, mode="json")


def gateway_env(spec: NotebookEnvironmentSpec, token_secret: str) -> list[dict[str, Any]]:
    """nbkube's variables first (the token by reference), then the user's."""
    field = {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", **field},
        {"name": "KG_IP", **field},
        {"name": "KG_PORT", "value": str(GATEWAY_PORT)},
        {"name": "KG_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret, "key": TOKEN_KEY}}},
        {"name": "KG_DEFAULT_KERNEL_NAME", "value": spec.kernel_name},
        {"name": "KG_MAX_KERNELS", "value": str(spec.max_kernels_per_pod)},
        {"name": "KG_LIST_KERNELS", "value": "True"},
        {"name": "JUPYTER_RUNTIME_DIR", "value": JUPYTER_RUNTIME_DIR},
    ]
    return env + [_k8s(e) for e in spec.env]


def gateway_container(spec: NotebookEnvironmentSpec, token_secret: str) -> dict[str, Any]:
    args = [f"--MappingKernelManager.cull_idle_timeout={spec.idle_kernel_timeout_seconds}"]
    if spec.idle_kernel_timeout_seconds:
        args.append("--MappingKernelManager.cull_interval=60")
    probe_base = {"tcpSocket": {"port": GATEWAY_PORT}}
    container: dict[str, Any] = {
        "name": GATEWAY_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": list(spec.command) or list(DEFAULT_COMMAND),
        "args": args,
        "env": gateway_env(spec, token_secret),
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
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": TMP_MOUNT_PATH},
            {"name": HOME_VOLUME, "mountPath": HOME_MOUNT_PATH},
            *(_k8s(m) for m in spec.volume_mounts),
        ],
    }
    if spec.env_from:
        container["envFrom"] = [_k8s(e) for e in spec.env_from]
    return container


def base_pod_spec(spec: NotebookEnvironmentSpec, token_secret: str) -> dict[str, Any]:
    """The gateway pod's spec from the typed fields, before the overlay."""
    pod: dict[str, Any] = {
        "automountServiceAccountToken": bool(
            spec.service_account_name and spec.automount_service_account_token
        ),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [gateway_container(spec, token_secret)],
        "volumes": [
            {"name": TMP_VOLUME, "emptyDir": {}},
            {"name": HOME_VOLUME, "emptyDir": {}},
            *(_k8s(v) for v in spec.volumes),
        ],
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [_k8s(t) for t in spec.tolerations]
    if spec.affinity is not None:
        pod["affinity"] = _k8s(spec.affinity)
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [_k8s(s) for s in spec.image_pull_secrets]
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    return packages.with_installer(pod, spec, GATEWAY_CONTAINER)


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """The overlay merged onto base: maps recursively, a null removes a field, MERGE_KEYS lists item by
    item, APPENDED lists appended, anything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        mine = out.get(key)
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(mine, Mapping):
            out[key] = merge(mine, value)
        elif isinstance(value, list) and isinstance(mine, list) and key in MERGE_KEYS:
            out[key] = _merge_list(mine, value, MERGE_KEYS[key])
        elif isinstance(value, list) and isinstance(mine, list) and key in APPENDED:
            out[key] = mine + copy.deepcopy(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_list(base: list[Any], overlay: list[Any], key: str) -> list[Any]:
    out = copy.deepcopy(base)
    for item in overlay:
        at = next(
            (
                i
                for i, mine in enumerate(out)
                if isinstance(item, Mapping)
                and isinstance(mine, Mapping)
                and key in item
                and mine.get(key) == item[key]
            ),
            None,
        )
        if at is None:
            out.append(copy.deepcopy(item))
        else:
            out[at] = merge(out[at], item)
    return out


def gateway_pod(spec: NotebookEnvironmentSpec, token_secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(extra template metadata, pod spec) of the gateway pods: the typed fields with the overlay
    merged on. Call overlay_problems() first: this does not check the overlay."""
    pod = base_pod_spec(spec, token_secret)
    overlay = spec.pod_template
    if overlay is None:
        return {}, pod
    metadata = {
        k: dict(v)
        for k, v in (("labels", overlay.metadata.labels), ("annotations", overlay.metadata.annotations))
        if v
    }
    return metadata, merge(pod, overlay.spec)


def _named(items: Any, name: str, key: str = "name") -> dict[str, Any] | None:
    if not isinstance(items, list):
        return None
    return next((dict(i) for i in items if isinstance(i, Mapping) and i.get(key) == name), None)


def _nbkube_env(env: Any) -> list[Any]:
    return [e for e in env or [] if not isinstance(e, Mapping) or env_name_problem(str(e.get("name", "")))]


def _hides_ours(path: str) -> bool:
    return any(p == path or p.startswith(path.rstrip("/") + "/") for p in NBKUBE_MOUNT_PATHS)


def _container_problems(container: Any, where: str) -> list[str]:
    if not isinstance(container, Mapping):
        return [f"{where} is not an object"]
    problems = []
    context = container.get("securityContext") or {}
    if not isinstance(context, Mapping):
        return [f"{where}.securityContext is not an object"]
    if context.get("privileged"):
        problems.append(f"{where} may not be privileged")
    if context.get("allowPrivilegeEscalation"):
        problems.append(f"{where} may not allow privilege escalation")
    if context.get("runAsNonRoot") is False or context.get("runAsUser") == 0:
        problems.append(f"{where} may not run as root")
    if (context.get("capabilities") or {}).get("add"):
        problems.append(f"{where} may not add capabilities")
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        problems.append(f"{where} may not run unconfined by seccomp")
    for entry in container.get("envFrom") or []:
        if isinstance(entry, Mapping) and str(entry.get("prefix") or "").startswith(NBKUBE_ENV_PREFIX):
            problems.append(f"{where}.envFrom prefix {entry.get('prefix')}: {NBKUBE_ENV_PREFIX}* is nbkube's")
    return problems


def overlay_problems(spec: NotebookEnvironmentSpec) -> list[str]:
    """How the spec's podTemplate would change what nbkube owns, one sentence each; [] if it does not."""
    if spec.pod_template is None or not spec.pod_template.spec:
        return []
    placeholder = "token-secret"
    base = base_pod_spec(spec, placeholder)
    _, pod = gateway_pod(spec, placeholder)
    problems: list[str] = []
    prefix = "podTemplate.spec"

    containers = pod.get("containers")
    gateway = _named(containers, GATEWAY_CONTAINER)
    if gateway is None:
        return [f"{prefix}.containers: the {GATEWAY_CONTAINER} container may not be removed"]
    ours = base["containers"][0]
    where = f"{prefix}.containers[{GATEWAY_CONTAINER}]"
    for field in GATEWAY_OWNED:
        if gateway.get(field) != ours.get(field):
            problems.append(f"{where}.{field} is nbkube's")
    if _nbkube_env(gateway.get("env")) != _nbkube_env(ours["env"]):
        problems.append(f"{where}.env: {NBKUBE_ENV_PREFIX}*, POD_IP and JUPYTER_RUNTIME_DIR are nbkube's")
    mounts = gateway.get("volumeMounts") or []
    our_mounts = [m for m in ours["volumeMounts"] if m["name"].startswith(NBKUBE_VOLUME_PREFIX)]
    for mount in our_mounts:
        if mount not in mounts:
            problems.append(f"{where}.volumeMounts: {mount['mountPath']} ({mount['name']}) is nbkube's")
    for mount in mounts:
        if isinstance(mount, Mapping) and mount not in our_mounts:
            if _hides_ours(str(mount.get("mountPath", ""))):
                problems.append(f"{where}.volumeMounts: {mount.get('mountPath')} would hide nbkube's own")
    for kind in ("containers", "initContainers"):
        for container in pod.get(kind) or []:
            name = str(container.get("name", "")) if isinstance(container, Mapping) else ""
            if name.startswith(NBKUBE_VOLUME_PREFIX) and container != _named(base.get(kind), name):
                problems.append(f"{prefix}.{kind}[{name}]: {NBKUBE_VOLUME_PREFIX}* containers are nbkube's")

    for kind in ("containers", "initContainers"):
        for i, container in enumerate(pod.get(kind) or []):
            label = container.get("name", i) if isinstance(container, Mapping) else i
            problems += _container_problems(container, f"{prefix}.{kind}[{label}]")
    if pod.get("ephemeralContainers"):
        problems.append(f"{prefix}.ephemeralContainers cannot be set")

    context = pod.get("securityContext") or {}
    if not isinstance(context, Mapping):
        problems.append(f"{prefix}.securityContext is not an object")
    else:
        for field in ("runAsNonRoot", "runAsUser", "seccompProfile"):
            if context.get(field) != base["securityContext"][field]:
                problems.append(f"{prefix}.securityContext.{field} is nbkube's")
    for field in HOST_NAMESPACES:
        if pod.get(field):
            problems.append(f"{prefix}.{field} may not be set: kernels stay in the pod's own namespaces")
    if pod.get("automountServiceAccountToken") and not base["automountServiceAccountToken"]:
        problems.append(
            f"{prefix}.automountServiceAccountToken: set spec.serviceAccountName and "
            "spec.automountServiceAccountToken instead"
        )
    for field in ("serviceAccountName", "serviceAccount"):
        if pod.get(field) != base.get(field):
            problems.append(f"{prefix}.{field}: use spec.serviceAccountName")

    for volume in pod.get("volumes") or []:
        if not isinstance(volume, Mapping):
            problems.append(f"{prefix}.volumes: an item is not an object")
            continue
        name = str(volume.get("name", ""))
        if name.startswith(NBKUBE_VOLUME_PREFIX):
            if volume != _named(base["volumes"], name):
                problems.append(f"{prefix}.volumes[{name}]: {NBKUBE_VOLUME_PREFIX}* volumes are nbkube's")
            continue
        if "hostPath" in volume:
            problems.append(f"{prefix}.volumes[{name}]: hostPath volumes are refused (they reach the node)")
        sources = (volume.get("projected") or {}).get("sources") or []
        tokens = [s for s in sources if isinstance(s, Mapping) and "serviceAccountToken" in s]
        if tokens and not base["automountServiceAccountToken"]:
            problems.append(
                f"{prefix}.volumes[{name}]: a ServiceAccount token needs spec.serviceAccountName and "
                "spec.automountServiceAccountToken"
            )
    for name in (v["name"] for v in base["volumes"] if v["name"].startswith(NBKUBE_VOLUME_PREFIX)):
        if _named(pod.get("volumes"), name) is None:
            problems.append(f"{prefix}.volumes[{name}] is nbkube's")
    return problems
