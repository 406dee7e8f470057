"""Manifests of statically provisioned storage for tests: a PersistentVolume on a directory of this
machine (the node agent mounts hostPath volumes) and a claim the controller-manager binds to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def host_path_volume(name: str, path: Path, storage_class: str, access_mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": [access_mode],
            "storageClassName": storage_class,
            "hostPath": {"path": str(path)},
        },
    }


def claim(name: str, storage_class: str, access_mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": [access_mode],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
