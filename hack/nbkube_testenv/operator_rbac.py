"""The operator's RBAC in its own namespace, as the chart's Role and RoleBinding grant it
(charts/nbkube/templates/clusterrole.yaml): `get` on the one Secret holding the key gateway tokens are
derived from. operator_process.install() applies these next to rbac_manifests()."""

from __future__ import annotations

from typing import Any

from nbkube.config import Settings


def operator_namespace_rbac_manifests(
    namespace: str, name: str, key_secret: str | None = None
) -> list[dict[str, Any]]:
    """A Role and RoleBinding in `namespace` for the ServiceAccount `name` (also their names)."""
    secret = key_secret or Settings().gateway_token_key_secret
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
