"""controller.claim against the real API server: a child is created if absent, applied only while this
environment controls it, and never overwritten when it changed between the check and the apply."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from nbkube.environment import controller, objects
from nbkube.kube import Conflict, Kube, path_of
from nbkube_testenv.cluster import ClusterInfo
from nbkube_testenv.pytest_plugin import Kubectl


def _owner(kubectl: Kubectl, namespace: str, name: str) -> str:
    """The uid of a ConfigMap standing in for a NotebookEnvironment: an owner that exists, so the
    garbage collector leaves its dependents alone, and that no operator reconciles."""
    kubectl("create", "configmap", name, namespace=namespace)
    return str(kubectl.json("get", "configmap", name, namespace=namespace)["metadata"]["uid"])


def _policy(namespace: str, owner: str, uid: str) -> dict[str, Any]:
    policy = objects.gateway_network_policy("py", namespace, uid, "nbkube", {"app": "op"})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid, "controller": True}
    policy["metadata"]["ownerReferences"] = [ref]
    return policy


class _Meddling(Kube):
    """A client that lets someone else change the object right after the ownership check."""

    meddle: Any = None

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        found = await super().get_or_none(path)
        if found is not None and self.meddle is not None:
            self.meddle()
        return found


async def test_claim_creates_applies_its_own_and_refuses_anyone_elses(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl
) -> None:
    uid, other = _owner(kubectl, namespace, "ours"), _owner(kubectl, namespace, "theirs")
    kube = await _Meddling.connect(str(cluster.kubeconfig))
    try:
        created = await controller.claim(kube, _policy(namespace, "ours", uid), uid)
        assert objects.controlled_by(created, uid)
        changed = copy.deepcopy(_policy(namespace, "ours", uid))
        changed["spec"]["ingress"][0]["ports"][0]["port"] = 9999
        applied = await controller.claim(kube, changed, uid)
        assert applied["spec"]["ingress"][0]["ports"][0]["port"] == 9999

        before = await kube.get(path_of(created))
        with pytest.raises(
            controller.ChildConflict, match=f"NetworkPolicy {namespace}/py-gateway already exists"
        ):
            await controller.claim(kube, _policy(namespace, "theirs", other), other)
        assert (await kube.get(path_of(created)))["metadata"]["resourceVersion"] == before["metadata"][
            "resourceVersion"
        ]

        # changed by someone else between the check and the apply: the apply is refused, not forced
        kube.meddle = lambda: kubectl(
            "label", "networkpolicy", "py-gateway", "meddled=yes", "--overwrite", namespace=namespace
        )
        with pytest.raises(Conflict) as refused:
            await controller.claim(kube, _policy(namespace, "ours", uid), uid)
        print("REFUSED", refused.value)
        kube.meddle = None
        after = await kube.get(path_of(created))
        assert after["metadata"]["labels"]["meddled"] == "yes"
        assert after["spec"]["ingress"][0]["ports"][0]["port"] == 9999
    finally:
        await kube.close()


@pytest.mark.parametrize(
    "egress",
    [
        objects.GatewayEgress(),
        objects.GatewayEgress(
            denied_cidrs=("172.18.0.2/32", "10.96.0.0/12", "fd00::/8"),
            extra_rules=(
                {"to": [{"ipBlock": {"cidr": "10.96.0.10/32"}}], "ports": [{"port": 53, "protocol": "UDP"}]},
            ),
        ),
        objects.GatewayEgress(denied_cidrs=("0.0.0.0/0",)),
        objects.GatewayEgress(allow_all=True),
    ],
    ids=["default", "denied-and-extra", "no-ipv4", "allow-all"],
)
def test_the_api_server_accepts_every_shape_of_the_gateway_policy(
    namespace: str, kubectl: Kubectl, egress: objects.GatewayEgress
) -> None:
    policy = objects.gateway_network_policy(
        "py", namespace, "u", "nbkube", {"app.kubernetes.io/name": "nbkube", "c": "operator"}, egress
    )
    policy["metadata"].pop("ownerReferences")
    kubectl.apply(policy, namespace=namespace)
    stored = kubectl.json("get", "networkpolicy", "py-gateway", namespace=namespace)
    assert stored["spec"].get("egress") == policy["spec"].get("egress")
