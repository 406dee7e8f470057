"""RBAC is enforced: a ServiceAccount may do what its Role grants and nothing else, whether impersonated
by the admin or authenticated with its own TokenRequest token."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbkube.kube import Kube, KubeError, load_configuration, resource_path
from nbkube_testenv.cluster import ClusterInfo
from nbkube_testenv.pytest_plugin import Kubectl

ROLE = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: configmap-reader}
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads-configmaps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: configmap-reader}
subjects:
- {kind: ServiceAccount, name: reader}
"""


@pytest.fixture
def reader(namespace: str, kubectl: Kubectl) -> str:
    kubectl.apply(ROLE, namespace=namespace)
    kubectl("create", "configmap", "visible", "--from-literal=a=1", namespace=namespace)
    return f"system:serviceaccount:{namespace}:reader"


def test_impersonated_service_account_gets_what_its_role_grants_and_no_more(
    reader: str, namespace: str, kubectl: Kubectl
) -> None:
    listed = kubectl.json("get", "configmaps", namespace=namespace, as_user=reader)
    assert "visible" in [cm["metadata"]["name"] for cm in listed["items"]]

    secrets = kubectl("get", "secrets", namespace=namespace, as_user=reader, check=False)
    assert secrets.returncode != 0
    assert f'User "{reader}" cannot list resource "secrets" in API group ""' in secrets.stderr

    create = kubectl("create", "configmap", "mine", namespace=namespace, as_user=reader, check=False)
    assert create.returncode != 0
    assert f'User "{reader}" cannot create resource "configmaps"' in create.stderr

    elsewhere = kubectl("get", "configmaps", namespace="default", as_user=reader, check=False)
    assert 'cannot list resource "configmaps" in API group "" in the namespace "default"' in elsewhere.stderr


def test_token_request_kubeconfig_authenticates_as_the_service_account(
    cluster: ClusterInfo, reader: str, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    kubeconfig = cluster.service_account_kubeconfig(namespace, "reader", tmp_path / "reader.kubeconfig")
    whoami = kubectl.json("auth", "whoami", kubeconfig=kubeconfig)
    assert whoami["status"]["userInfo"]["username"] == reader
    assert "system:serviceaccounts" in whoami["status"]["userInfo"]["groups"]

    got = kubectl.json("get", "configmap", "visible", namespace=namespace, kubeconfig=kubeconfig)
    assert got["data"] == {"a": "1"}

    denied = kubectl("delete", "configmap/visible", namespace=namespace, kubeconfig=kubeconfig, check=False)
    assert denied.returncode != 0
    assert f'User "{reader}" cannot delete resource "configmaps"' in denied.stderr
    assert kubectl("get", "configmap", "visible", namespace=namespace).returncode == 0


async def test_the_operators_client_replaces_a_refused_token_once_and_reports_api_errors(
    cluster: ClusterInfo, reader: str, namespace: str, tmp_path: Path
) -> None:
    kubeconfig = cluster.service_account_kubeconfig(namespace, "reader", tmp_path / "reader.kubeconfig")
    configuration = load_configuration(str(kubeconfig))
    valid = configuration.api_key["BearerToken"]
    # The first token the client is handed has expired (as exec plugins and in-cluster tokens do).
    handed = iter(["Bearer expired-token", valid])
    configuration.refresh_api_key_hook = lambda c: c.api_key.update(BearerToken=next(handed))
    kube = await Kube.open(configuration)
    try:
        visible = await kube.get(resource_path("v1", "configmaps", namespace, "visible"))
        assert visible["data"] == {"a": "1"}
        # the fresh token is kept (the hook has nothing more to hand out)
        assert await kube.get_or_none(resource_path("v1", "configmaps", namespace, "missing")) is None
        with pytest.raises(KubeError) as denied:
            await kube.list(resource_path("v1", "secrets", namespace))
    finally:
        await kube.close()
    assert denied.value.status == 403
    assert f'User "{reader}" cannot list resource "secrets"' in denied.value.message
