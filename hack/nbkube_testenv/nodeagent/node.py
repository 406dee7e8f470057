"""The Node object this agent stands for: registered once, its status and Lease renewed every
HEARTBEAT_S seconds."""

from __future__ import annotations

import os
import threading
from typing import Any

from nbkube_testenv.nodeagent.common import log, micro_now, now_iso
from nbkube_testenv.rest import ApiError, Rest

HEARTBEAT_S = 10
LEASE_DURATION_S = 40
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def node_capacity() -> dict[str, str]:
    """The machine's CPUs and memory, 110 pods."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": str(os.cpu_count() or 2),
        "memory": f"{mem // 1024 // 1024 // 1024}Gi",
        "pods": "110",
        "ephemeral-storage": "50Gi",
    }


class Node:
    """Registers the Node and keeps it Ready: its status and its Lease, renewed by heartbeat_loop."""

    def __init__(
        self,
        api: Rest,
        name: str,
        kubelet_version: str,
        host_ip: str,
        capacity: dict[str, str],
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.name = name
        self.kubelet_version = kubelet_version
        self.host_ip = host_ip
        self.capacity = capacity
        self.annotations = annotations or {}
        self.uid = ""
        self._started = now_iso()

    def register(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": {
                    "kubernetes.io/hostname": self.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "node.kubernetes.io/instance-type": "nbkube-local-process",
                },
                "annotations": self.annotations,
            },
            "spec": {},
        }
        try:
            self.uid = self.api.post("/api/v1/nodes", node)["metadata"]["uid"]
        except ApiError as e:
            if e.status != 409:
                raise
            self.uid = self.api.get(f"/api/v1/nodes/{self.name}")["metadata"]["uid"]
            self.api.merge_patch(
                f"/api/v1/nodes/{self.name}", {"metadata": {"annotations": self.annotations}}
            )
        self.heartbeat()

    def status(self) -> dict[str, Any]:
        t = now_iso()

        def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, str]:
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": t,
                "lastTransitionTime": self._started,
            }

        return {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "nbkube node agent"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "nbkube node agent"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "nbkube node agent"),
                cond("Ready", "True", "KubeletReady", "nbkube node agent runs pods as local processes"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "nbkube",
                "systemUUID": "nbkube",
                "bootID": "nbkube",
                "kernelVersion": os.uname().release,
                "osImage": "local processes",
                "containerRuntimeVersion": "nbkube-process://0.1",
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    def heartbeat(self) -> None:
        self.api.merge_patch(f"/api/v1/nodes/{self.name}/status", {"status": self.status()})
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": micro_now(),
        }
        try:
            self.api.merge_patch(f"{LEASES}/{self.name}", {"spec": spec})
        except ApiError as e:
            if e.status != 404:
                raise
            self.api.post(
                LEASES,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.name,
                        "ownerReferences": [
                            {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.uid}
                        ],
                    },
                    "spec": spec,
                },
            )

    def heartbeat_loop(self, stopping: threading.Event) -> None:
        while not stopping.wait(HEARTBEAT_S):
            try:
                self.heartbeat()
            except Exception as e:  # keep heartbeating whatever happened
                log.warning("heartbeat failed: %s: %s", type(e).__name__, e)
