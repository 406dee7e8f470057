"""Packages per environment: the init container that pip-installs them into each gateway pod, and how
the controller reads its outcome from a pod.

The init container `nbkube-packages` runs the gateway's image with the gateway container's hardening
(`python -m nbkube.gateway.packages`, nbkube.gateway.packages) and installs with `pip --target` into
the emptyDir `nbkube-packages`, which the gateway container mounts read-only with its site-packages
directory first on PYTHONPATH: kernels import from there, and the pod reports Ready only once the
install succeeded. A requirements ConfigMap is mounted as a volume and read by pip; the operator only
hashes its content into the pods' spec hash (requirements.py), so that an edit rolls the pods.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from nbkube.api import NotebookEnvironmentSpec
from nbkube.api.environment import Packages
from nbkube.api.pod import PACKAGES_MOUNT_PATH, REQUIREMENTS_MOUNT_PATH

INIT_CONTAINER = "nbkube-packages"
VOLUME = "nbkube-packages"
REQUIREMENTS_VOLUME = "nbkube-requirements"
MOUNT_PATH = PACKAGES_MOUNT_PATH  # reserved in nbkube.api.pod: no user mount may hide it
SITE_PACKAGES = f"{MOUNT_PATH}/site-packages"
INSTALL_LOG = f"{MOUNT_PATH}/install.log"
SCRATCH = f"{MOUNT_PATH}/.scratch"
REQUIREMENTS_PATH = REQUIREMENTS_MOUNT_PATH
TERMINATION_LOG = "/dev/termination-log"
INSTALLER_COMMAND = ["python", "-m", "nbkube.gateway.packages"]


def installer_args(packages: Packages) -> list[str]:
    """The installer's command line: where to install and log, then what (plain specifiers, validated by
    the API, after `--` so none is ever read as an option)."""
    args = ["--target", SITE_PACKAGES, "--scratch", SCRATCH, "--log", INSTALL_LOG]
    args += ["--termination-log", TERMINATION_LOG]
    if packages.config_map_ref is not None:
        args += ["--requirements-file", f"{REQUIREMENTS_PATH}/{packages.config_map_ref.key}"]
        args += ["--requirements-source", f"ConfigMap {packages.config_map_ref.name}"]
    if packages.index_url:
        args += ["--index-url", packages.index_url]
    return [*args, "--", *packages.requirements]


def _python_path(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The gateway container's env with the installed packages first on PYTHONPATH (before a PYTHONPATH
    the user set, which stays on it)."""
    mine = [e for e in env if e.get("name") == "PYTHONPATH"]
    if not mine:
        return [*env, {"name": "PYTHONPATH", "value": SITE_PACKAGES}]
    if "valueFrom" in mine[-1]:  # not a literal: expand it after ours (the last definition wins)
        return [*env, {"name": "PYTHONPATH", "value": f"{SITE_PACKAGES}:$(PYTHONPATH)"}]
    value = mine[-1].get("value") or ""
    entry = {"name": "PYTHONPATH", "value": f"{SITE_PACKAGES}:{value}" if value else SITE_PACKAGES}
    return [entry if e is mine[-1] else e for e in env]


def with_installer(
    pod_spec: Mapping[str, Any], spec: NotebookEnvironmentSpec, container: str = "gateway"
) -> dict[str, Any]:
    """The gateway pod spec with the packages installer added, or unchanged (a copy) when the environment
    wants no packages."""
    pod = copy.deepcopy(dict(pod_spec))
    packages = spec.packages
    if packages is None or not packages.wanted:
        return pod
    gateway = next(c for c in pod["containers"] if c["name"] == container)
    mounts: list[dict[str, Any]] = [{"name": VOLUME, "mountPath": MOUNT_PATH}]
    volumes: list[dict[str, Any]] = [{"name": VOLUME, "emptyDir": {}}]
    if packages.config_map_ref is not None:
        # optional: a missing ConfigMap or key is the installer's clear failure, not a pod stuck mounting.
        config_map = {"name": packages.config_map_ref.name, "optional": True}
        volumes.append({"name": REQUIREMENTS_VOLUME, "configMap": config_map})
        mounts.append({"name": REQUIREMENTS_VOLUME, "mountPath": REQUIREMENTS_PATH, "readOnly": True})
    installer: dict[str, Any] = {
        "name": INIT_CONTAINER,
        "image": gateway["image"],
        "imagePullPolicy": gateway.get("imagePullPolicy", "IfNotPresent"),
        "command": list(INSTALLER_COMMAND),
        "args": installer_args(packages),
        # The user's env (proxies, PIP_* settings) reaches pip; the gateway's own (its token) does not.
        "env": [
            *(e.to_api() for e in spec.env),
            # The root filesystem is read-only: pip builds (and a package's build may write its home)
            # in the volume, in a directory the installer empties first and removes afterwards.
            {"name": "HOME", "value": SCRATCH},
            {"name": "TMPDIR", "value": SCRATCH},
        ],
        "resources": copy.deepcopy(gateway.get("resources", {})),
        "securityContext": copy.deepcopy(gateway.get("securityContext", {})),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    gateway["env"] = _python_path(list(gateway.get("env", [])))
    gateway["volumeMounts"] = [
        *gateway.get("volumeMounts", []),
        {"name": VOLUME, "mountPath": MOUNT_PATH, "readOnly": True},
    ]
    pod["initContainers"] = [*pod.get("initContainers", []), installer]
    pod["volumes"] = [*pod.get("volumes", []), *volumes]
    return pod


def install_failure(pod: Mapping[str, Any]) -> str | None:
    """Why the packages install of this gateway pod failed (pip's decisive line, as the installer wrote
    it last), or None while it has not failed. The kubelet retries a failed init container with backoff:
    until an attempt succeeds, the last failed one is the answer."""
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    status = next((s for s in statuses if s.get("name") == INIT_CONTAINER), None)
    if status is None:
        return None
    state = status.get("state") or {}
    terminated = state.get("terminated")
    if terminated is not None and terminated.get("exitCode") == 0:
        return None
    if terminated is None:
        terminated = (status.get("lastState") or {}).get("terminated")
    if terminated is None or terminated.get("exitCode") in (None, 0):
        return None
    lines = [line.strip() for line in str(terminated.get("message") or "").splitlines() if line.strip()]
    detail = lines[-1] if lines else f"exit code {terminated.get('exitCode')}"
    return detail[:1000]


def failure_message(pod_name: str, detail: str) -> str:
    return (
        f"installing packages failed on gateway pod {pod_name}: {detail} "
        f"(the whole log: kubectl logs {pod_name} -c {INIT_CONTAINER}; the install is retried with backoff)"
    )
