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

UID = "0d6a8e4c-0000-4000-8000-000000000001"


def _policy(namespace: str, uid: str = UID) -> dict[str, Any]:
    return objects.gateway_network_policy("py", namespace, uid, "nbkube", {"app": "op"})


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
    kube = await _Meddling.connect(str(cluster.kubeconfig))
    try:
        created = await controller.claim(kube, _policy(namespace), UID)
        assert objects.controlled_by(created, UID)
        changed = copy.deepcopy(_policy(namespace))
        changed["spec"]["ingress"][0]["ports"][0]["port"] = 9999
        applied = await controller.claim(kube, changed, UID)
        assert applied["spec"]["ingress"][0]["ports"][0]["port"] == 9999

        other = "0d6a8e4c-0000-4000-8000-000000000002"
        before = await kube.get(path_of(created))
        with pytest.raises(
            controller.ChildConflict, match=f"NetworkPolicy {namespace}/py-gateway already exists"
        ):
            await controller.claim(kube, _policy(namespace, other), other)
        assert (await kube.get(path_of(created)))["metadata"]["resourceVersion"] == before["metadata"][
            "resourceVersion"
        ]

        # changed by someone else between the check and the apply: the apply is refused, not forced
        kube.meddle = lambda: kubectl(
            "label", "networkpolicy", "py-gateway", "meddled=yes", "--overwrite", namespace=namespace
        )
        with pytest.raises(Conflict):
            await controller.claim(kube, _policy(namespace), UID)
        kube.meddle = None
        after = await kube.get(path_of(created))
        assert after["metadata"]["labels"]["meddled"] == "yes"
        assert after["spec"]["ingress"][0]["ports"][0]["port"] == 9999
    finally:
        await kube.close()
