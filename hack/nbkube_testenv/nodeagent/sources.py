"""What a pod's env and volumes refer to, read through the API: ConfigMap and Secret entries, the
downward API's fields and a container's resources."""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

from nbkube_testenv.nodeagent.common import ConfigError
from nbkube_testenv.rest import ApiError

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.worker import PodWorker


class PodSources:
    """Looks up what one pod refers to, as the pod is now (its worker keeps the latest object)."""

    def __init__(self, worker: PodWorker) -> None:
        self.worker = worker

    def lookup(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """A ConfigMap's or Secret's entries as bytes (binaryData included), None when optional and absent."""
        ns = self.worker.pod["metadata"]["namespace"]
        try:
            obj = self.worker.agent.api.get(f"/api/v1/namespaces/{ns}/{kind}s/{name}")
        except ApiError as e:
            if e.status == 404 and optional:
                return None
            if e.status == 404:
                raise ConfigError("CreateContainerConfigError", f'{kind} "{name}" not found') from e
            raise
        if kind == "secret":
            return {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
        data = {k: v.encode() for k, v in obj.get("data", {}).items()}
        data.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
        return data

    def text(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        data = self.lookup(kind, name, optional)
        return None if data is None else {k: v.decode(errors="replace") for k, v in data.items()}

    def key_ref(self, kind: str, ref: dict[str, Any]) -> str | None:
        data = self.text(kind, ref["name"], ref.get("optional", False))
        if data is None:
            return None
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise ConfigError(
                "CreateContainerConfigError", f"couldn't find key {ref['key']} in {kind} {ref['name']}"
            )
        return data[ref["key"]]

    def field(self, path: str) -> str:
        pod = self.worker.pod
        meta = pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return meta.get(m.group(1), {}).get(m.group(2), "")
        values = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.podIP": self.worker.ip,
            "status.podIPs": self.worker.ip,
            "status.hostIP": self.worker.agent.host_ip,
            "status.hostIPs": self.worker.agent.host_ip,
        }
        if path not in values:
            raise ConfigError("CreateContainerConfigError", f"unsupported fieldRef {path}")
        return values[path]

    def resource(self, spec: dict[str, Any], ref: dict[str, Any]) -> str:
        """As a kubelet resolves resourceFieldRef: the named container's (else this one's) limit, the
        node's allocatable amount when none is set, or its request; divided by divisor, rounded up."""
        from nbkube.api.pod import parse_quantity

        if ref.get("containerName"):
            pod_spec = self.worker.pod["spec"]
            containers = pod_spec.get("containers", []) + pod_spec.get("initContainers", [])
            spec = next((c for c in containers if c["name"] == ref["containerName"]), None) or {}
            if not spec:
                raise ConfigError("CreateContainerConfigError", f"container {ref['containerName']} not found")
        section, _, res = ref["resource"].partition(".")
        value = spec.get("resources", {}).get(section, {}).get(res)
        if value is None:
            value = self.worker.agent.capacity.get(res, "0") if section == "limits" else "0"
        scale = 1000 if res == "cpu" else 1  # cpu in millicores, as the kubelet divides it
        amount = (parse_quantity(value) * scale).to_integral_value(rounding="ROUND_CEILING")
        divisor = (parse_quantity(ref.get("divisor") or 0) or 1) * scale  # the API server defaults it to 0
        return str(int((amount / divisor).to_integral_value(rounding="ROUND_CEILING")))
