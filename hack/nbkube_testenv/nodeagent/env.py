"""A container's environment: the node's, the service's, NBKUBE_* and what the pod spec sets."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from nbkube_testenv.nodeagent.common import ConfigError

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.worker import PodWorker

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def env_name(name: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", name.upper())


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: defined variables are replaced, $$ escapes, the rest stays."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_REF.sub(sub, text)


def container_env(worker: PodWorker, spec: dict[str, Any]) -> dict[str, str]:
    """The environment one container of the worker's pod runs with (ConfigError when a source is missing)."""
    meta = worker.pod["metadata"]
    sources = worker.sources
    # A container sees the node's environment, as a process would, but not the test run's own markers:
    # ipykernel turns its file-descriptor capture off when it sees PYTEST_CURRENT_TEST.
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTEST_CURRENT_TEST")}
    env.update(worker.agent.service_env)
    env["HOSTNAME"] = meta["name"]
    env["NBKUBE_POD_IP"] = worker.ip
    env["NBKUBE_POD_DIR"] = str(worker.pod_dir)
    for name, path in worker.volumes.paths.items():
        env[f"NBKUBE_VOLUME_{env_name(name)}"] = path
    defined: dict[str, str] = {}
    for src in spec.get("envFrom", []):
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            data = sources.text("configmap", ref["name"], ref.get("optional", False)) or {}
        else:
            ref = src["secretRef"]
            data = sources.text("secret", ref["name"], ref.get("optional", False)) or {}
        defined.update({prefix + k: v for k, v in data.items()})
    for item in spec.get("env", []):
        name = item["name"]
        if "valueFrom" not in item:
            defined[name] = expand(item.get("value", ""), defined)
            continue
        vf = item["valueFrom"]
        value: str | None
        if "fieldRef" in vf:
            value = sources.field(vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            value = sources.resource(spec, vf["resourceFieldRef"])
        elif "secretKeyRef" in vf:
            value = sources.key_ref("secret", vf["secretKeyRef"])
        elif "configMapKeyRef" in vf:
            value = sources.key_ref("configmap", vf["configMapKeyRef"])
        else:
            raise ConfigError("CreateContainerConfigError", f"unsupported valueFrom {list(vf)}")
        if value is not None:
            defined[name] = value
    env.update(defined)
    return env
