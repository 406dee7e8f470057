"""Kube.get_data reads a ConfigMap's or Secret's data as the real API server encodes it (protobuf, or JSON
when asked for that), to the same bytes."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from nbkube import objectdata
from nbkube.kube import Kube
from nbkube_testenv.cluster import ClusterInfo


@pytest.fixture
async def kube(cluster: ClusterInfo) -> Any:
    client = await Kube.connect(str(cluster.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


async def test_config_map_and_secret_data_decode_from_protobuf_as_from_json(
    kube: Kube, kubectl: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    real = objectdata.from_protobuf
    monkeypatch.setattr(
        objectdata, "from_protobuf", lambda body, kind: decoded.append(kind) or real(body, kind)
    )
    blob = os.urandom(300_000) + b"\x00\xff"
    text = "héllo, wörld\n" * 10
    create = lambda obj: kubectl("create", "-f", "-", input=json.dumps(obj), namespace=namespace)  # noqa: E731
    create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "mixed"},
            "data": {"text.txt": text, "empty": ""},
            "binaryData": {"blob.bin": base64.b64encode(blob).decode()},
        }
    )
    create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"password": base64.b64encode(b"p\x00ss").decode()},
            "stringData": {"user": "me"},
        }
    )
    expected_cm = {"text.txt": text.encode(), "empty": b"", "blob.bin": blob}
    path = f"/api/v1/namespaces/{namespace}/configmaps/mixed"
    assert await kube.get_data(path, "ConfigMap") == expected_cm
    assert objectdata.from_json(await kube.get(path), "ConfigMap") == expected_cm
    secret_path = f"/api/v1/namespaces/{namespace}/secrets/creds"
    assert await kube.get_data(secret_path, "Secret") == {"password": b"p\x00ss", "user": b"me"}
    assert await kube.get_data(f"/api/v1/namespaces/{namespace}/configmaps/absent", "ConfigMap") is None
    assert decoded == ["ConfigMap", "Secret"]  # the server answered protobuf
