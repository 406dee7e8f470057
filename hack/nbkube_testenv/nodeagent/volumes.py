"""A pod's volumes set up on the host: emptyDir, secret, configMap, downwardAPI and projected volumes
written under the pod's directory, hostPath as it is, a persistentVolumeClaim resolved to the directory
of its PersistentVolume. A volume that cannot be set up is a ConfigError with reason FailedMount."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbkube_testenv.nodeagent.common import ConfigError
from nbkube_testenv.rest import ApiError

if TYPE_CHECKING:
    from nbkube_testenv.nodeagent.worker import PodWorker


class PodVolumes:
    """Where each volume of one pod lives on the host (`paths`) and which are read-only."""

    def __init__(self, worker: PodWorker) -> None:
        self.worker = worker
        self.paths: dict[str, str] = {}
        self.read_only: set[str] = set()

    def materialise(self) -> None:
        for vol in self.worker.pod["spec"].get("volumes", []):
            try:
                self._materialise(vol)
            except ConfigError as e:
                raise ConfigError(
                    "FailedMount", f'MountVolume.SetUp failed for volume "{vol["name"]}" : {e}'
                ) from e

    def _materialise(self, vol: dict[str, Any]) -> None:
        name = vol["name"]
        if "hostPath" in vol:
            self.paths[name] = vol["hostPath"]["path"]
            return
        if "persistentVolumeClaim" in vol:
            self.paths[name] = self._claim_path(vol["persistentVolumeClaim"])
            if vol["persistentVolumeClaim"].get("readOnly"):
                self.read_only.add(name)
            return
        if any(kind in vol for kind in ("secret", "configMap", "downwardAPI", "projected")):
            self.read_only.add(name)
        target = self.worker.pod_dir / "volumes" / name
        target.mkdir(parents=True, exist_ok=True)
        self.paths[name] = str(target)
        if "secret" in vol:
            self._write_object(target, "secret", vol["secret"]["secretName"], vol["secret"])
        elif "configMap" in vol:
            self._write_object(target, "configmap", vol["configMap"]["name"], vol["configMap"])
        elif "downwardAPI" in vol:
            self._write_fields(target, vol["downwardAPI"])
        elif "projected" in vol:
            for src in vol["projected"].get("sources", []):
                if "serviceAccountToken" in src:
                    sat = src["serviceAccountToken"]
                    self._write_files(
                        target, {"t": self._token(sat).encode()}, [{"key": "t", "path": sat["path"]}]
                    )
                elif "configMap" in src:
                    self._write_object(target, "configmap", src["configMap"]["name"], src["configMap"])
                elif "secret" in src:
                    self._write_object(target, "secret", src["secret"]["name"], src["secret"])
                elif "downwardAPI" in src:
                    self._write_fields(target, src["downwardAPI"])

    def _write_object(self, target: Path, kind: str, name: str, source: dict[str, Any]) -> None:
        """A ConfigMap's or Secret's entries (or the chosen items) as files."""
        data = self.worker.sources.lookup(kind, name, source.get("optional", False)) or {}
        self._write_files(target, data, source.get("items"))

    def _write_fields(self, target: Path, source: dict[str, Any]) -> None:
        """The downward API's fieldRef items as files."""
        for item in source.get("items", []):
            if "fieldRef" in item:
                value = self.worker.sources.field(item["fieldRef"]["fieldPath"])
                self._write_files(target, {"v": value.encode()}, [{"key": "v", "path": item["path"]}])

    def _write_files(self, target: Path, data: dict[str, bytes], items: list[dict[str, Any]] | None) -> None:
        pairs = (
            [(i["path"], data[i["key"]]) for i in items if i["key"] in data] if items else list(data.items())
        )
        for rel, content in pairs:
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)

    def _token(self, source: dict[str, Any]) -> str:
        pod = self.worker.pod
        meta, spec = pod["metadata"], pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": source.get("expirationSeconds", 3607),
                "boundObjectRef": {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        if source.get("audience"):
            body["spec"]["audiences"] = [source["audience"]]
        api = self.worker.agent.api
        resp = api.post(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
        return resp["status"]["token"]

    def _claim_path(self, claim: dict[str, Any]) -> str:
        """The directory of the PersistentVolume a claim of the pod's namespace is bound to."""
        api = self.worker.agent.api
        ns, name = self.worker.pod["metadata"]["namespace"], claim["claimName"]
        try:
            pvc = api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}")
        except ApiError as e:
            if e.status == 404:
                raise ConfigError("FailedMount", f'persistentvolumeclaim "{name}" not found') from e
            raise
        volume_name = pvc.get("spec", {}).get("volumeName")
        if pvc.get("status", {}).get("phase") != "Bound" or not volume_name:
            raise ConfigError("FailedMount", f'persistentvolumeclaim "{name}" is not bound')
        pv = api.get(f"/api/v1/persistentvolumes/{volume_name}")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            raise ConfigError(
                "FailedMount",
                f'persistentvolume "{volume_name}": the node agent mounts only hostPath and local volumes',
            )
        path = str(source["path"])
        if not os.path.isdir(path):
            if pv["spec"].get("hostPath", {}).get("type") != "DirectoryOrCreate":
                raise ConfigError("FailedMount", f'persistentvolume "{volume_name}": {path} does not exist')
            os.makedirs(path, exist_ok=True)
        return path
