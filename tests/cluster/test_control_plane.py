"""The local control plane is a real Kubernetes API: release version, Ready node, CRDs and their schemas."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from kubernetes import client
from nbkube_testenv.cluster import ClusterInfo
from nbkube_testenv.pytest_plugin import Kubectl, KubectlError

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.testenv.nbkube.io
spec:
  group: testenv.nbkube.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, enum: [red, blue]}
"""


def widget(name: str, size: object, color: str = "red") -> str:
    return f"""
apiVersion: testenv.nbkube.io/v1
kind: Widget
metadata: {{name: {name}}}
spec: {{size: {size}, color: {color}}}
"""


@pytest.fixture(scope="module")
def widget_crd(_session_kubectl: Kubectl) -> Iterator[str]:
    kubectl = _session_kubectl
    kubectl.apply(CRD)
    kubectl("wait", "--for=condition=Established", "crd/widgets.testenv.nbkube.io", "--timeout=120s")
    yield "widgets.testenv.nbkube.io"
    kubectl("delete", "crd", "widgets.testenv.nbkube.io", "--wait=false", check=False)


def test_server_reports_the_pinned_release_version(cluster: ClusterInfo, kubectl: Kubectl) -> None:
    server = kubectl.json("version")["serverVersion"]
    assert re.fullmatch(r"v1\.(3[4-9]|[4-9]\d)\.\d+", server["gitVersion"]), server
    assert server["gitVersion"] == cluster.version


def test_node_agent_registers_a_ready_node_with_capacity(cluster: ClusterInfo, k8s_api: object) -> None:
    node = client.CoreV1Api(k8s_api).read_node(cluster.node_name)
    ready = {c.type: c.status for c in node.status.conditions}["Ready"]
    assert ready == "True"
    assert int(node.status.capacity["pods"]) == 110
    assert int(node.status.allocatable["cpu"]) >= 1
    assert node.status.node_info.kubelet_version == cluster.version
    lease = client.CoordinationV1Api(k8s_api).read_namespaced_lease(cluster.node_name, "kube-node-lease")
    assert lease.spec.holder_identity == cluster.node_name


def test_crd_and_custom_resource_apply_with_kubectl(
    widget_crd: str, namespace: str, kubectl: Kubectl
) -> None:
    kubectl.apply(widget("small", 3), namespace=namespace)
    stored = kubectl.json("get", "widget", "small", namespace=namespace)
    assert stored["spec"] == {"size": 3, "color": "red"}
    assert stored["metadata"]["namespace"] == namespace


@pytest.mark.parametrize(
    ("size", "color", "message"),
    [
        ('"big"', "red", 'spec.size: Invalid value: "string": spec.size in body must be of type integer'),
        ("0", "red", "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
        ("2", "green", 'spec.color: Unsupported value: "green": supported values: "red", "blue"'),
    ],
)
def test_custom_resource_violating_the_schema_is_rejected_with_the_api_servers_message(
    widget_crd: str, namespace: str, kubectl: Kubectl, size: str, color: str, message: str
) -> None:
    with pytest.raises(KubectlError) as rejected:
        kubectl.apply(widget("bad", size, color), namespace=namespace)
    assert 'The Widget "bad" is invalid' in str(rejected.value)
    assert message in str(rejected.value)
    assert kubectl("get", "widget", "bad", namespace=namespace, check=False).returncode != 0
