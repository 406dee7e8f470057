"""A requirements ConfigMap (`packages.configMapRef`) as part of what the gateway pods are built from.

pip reads the ConfigMap inside the pod, so a pod keeps the packages of the content it started with.
The operator therefore folds a digest of the ConfigMap's content (every key: the requirements file may
name its siblings with -r or -c) into the pods' spec hash: a changed, created or deleted ConfigMap is a
new pod template, and the Deployment rolls its pods as for any spec change. The content itself is
hashed and dropped, never stored, logged or put in a status.

RequirementsIndex is the operator's memory of which environments use which ConfigMap and the digest
each one's pods were built from, fed by the reconciles (what they read) and the ConfigMap watch (what
changed since); pure bookkeeping, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nbkube.api import NotebookEnvironmentSpec

# The digest of a ConfigMap that does not exist (pods built then fail their install, naming it).
ABSENT = "absent"


def config_map_name(spec: NotebookEnvironmentSpec) -> str | None:
    """The requirements ConfigMap the spec names, if any."""
    ref = spec.packages.config_map_ref if spec.packages is not None else None
    return ref.name if ref is not None else None


def config_map_digest(config_map: Mapping[str, Any] | None) -> str:
    """A short digest of a ConfigMap's content (data and binaryData, as the API serves them in JSON);
    ABSENT for none."""
    if config_map is None:
        return ABSENT
    content = {"data": config_map.get("data") or {}, "binaryData": config_map.get("binaryData") or {}}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass
class _Use:
    config_map: str
    built: str | None = None  # the digest the environment's current Deployment was built from


class RequirementsIndex:
    """Which environment uses which requirements ConfigMap (per namespace), the digest its pods were
    built from, and the latest digest seen of each such ConfigMap."""

    def __init__(self) -> None:
        self._uses: dict[tuple[str, str], _Use] = {}  # (namespace, environment)
        self._seen: dict[tuple[str, str], str] = {}  # (namespace, config map)

    def track(self, namespace: str, environment: str, config_map: str | None) -> None:
        """The environment's spec names this ConfigMap (or none): called before the ConfigMap is read,
        so a change arriving while it is read and applied is not missed."""
        use = self._uses.get((namespace, environment))
        if config_map is None:
            self.forget(namespace, environment)
        elif use is None or use.config_map != config_map:
            self._uses[(namespace, environment)] = _Use(config_map)
            self._drop_unused(namespace, use.config_map if use else None)

    def built(self, namespace: str, environment: str, config_map: str, digest: str) -> None:
        """The environment's Deployment now carries this digest of the ConfigMap, as just read. What a
        watch event showed meanwhile stays the latest seen: if it differs, the environment is behind."""
        self._uses[(namespace, environment)] = _Use(config_map, digest)
        self._seen.setdefault((namespace, config_map), digest)

    def built_digest(self, namespace: str, environment: str) -> str | None:
        use = self._uses.get((namespace, environment))
        return use.built if use is not None else None

    def used(self, namespace: str, config_map: str) -> bool:
        return any(ns == namespace and use.config_map == config_map for (ns, _), use in self._uses.items())

    def seen(self, namespace: str, config_map: str, digest: str) -> list[str]:
        """Records what a watch event showed of a ConfigMap some environment uses; returns the
        environments whose pods were built from other content (to be rebuilt now)."""
        if not self.used(namespace, config_map):
            return []
        self._seen[(namespace, config_map)] = digest
        return sorted(
            env
            for (ns, env), use in self._uses.items()
            if ns == namespace and use.config_map == config_map and use.built not in (None, digest)
        )

    def behind(self, namespace: str, environment: str) -> bool:
        """True when the environment uses a ConfigMap and its pods were not (yet) built from the latest
        content seen of it: its Deployment is to be applied again."""
        use = self._uses.get((namespace, environment))
        if use is None:
            return False
        latest = self._seen.get((namespace, use.config_map))
        return use.built is None or (latest is not None and latest != use.built)

    def forget(self, namespace: str, environment: str) -> None:
        use = self._uses.pop((namespace, environment), None)
        if use is not None:
            self._drop_unused(namespace, use.config_map)

    def _drop_unused(self, namespace: str, config_map: str | None) -> None:
        if config_map is not None and not self.used(namespace, config_map):
            self._seen.pop((namespace, config_map), None)
