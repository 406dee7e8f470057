"""Decoding a ConfigMap's or Secret's data from Kubernetes' protobuf encoding (nbkube.objectdata); the real
API server's bytes are tested in tests/cluster/test_object_data_on_cluster.py."""

from __future__ import annotations

import pytest
from nbkube.objectdata import MAGIC, UndecodableObject, from_protobuf


def _field(number: int, data: bytes) -> bytes:
    def varint(value: int) -> bytes:
        out = b""
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out += bytes([byte | 0x80])
            else:
                return out + bytes([byte])

    return varint(number << 3 | 2) + varint(len(data)) + data


def _entry(key: str, value: bytes) -> bytes:
    return _field(1, key.encode()) + _field(2, value)


def _envelope(obj: bytes) -> bytes:
    return (
        MAGIC + _field(1, b"type-meta") + _field(2, obj) + _field(4, b"application/vnd.kubernetes.protobuf")
    )


def test_data_and_binary_data_of_a_config_map_and_only_data_of_a_secret() -> None:
    big = bytes(range(256)) * 1000
    config_map = (
        _field(1, b"metadata") + _field(2, _entry("a.txt", b"text")) + _field(3, _entry("b.bin", big))
    )
    assert from_protobuf(_envelope(config_map), "ConfigMap") == {"a.txt": b"text", "b.bin": big}
    secret = _field(1, b"metadata") + _field(2, _entry("k", b"\x00v")) + _field(3, b"Opaque")
    assert from_protobuf(_envelope(secret), "Secret") == {"k": b"\x00v"}
    assert from_protobuf(_envelope(_field(2, _entry("empty", b""))), "ConfigMap") == {"empty": b""}


@pytest.mark.parametrize(
    "body",
    [b'{"kind": "ConfigMap"}', MAGIC, MAGIC + _field(2, b"\x12\xff\xff\xff\x0f"), MAGIC + b"\x12\x80"],
)
def test_bodies_that_are_not_an_object_are_refused_without_quoting_them(body: bytes) -> None:
    with pytest.raises(UndecodableObject) as refused:
        from_protobuf(body, "ConfigMap")
    assert "ConfigMap" not in str(refused.value) and "\\x" not in str(refused.value)
