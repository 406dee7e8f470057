"""The data of a ConfigMap or a Secret as bytes by key, from the API server's protobuf or JSON encoding.

Runs read the ConfigMaps and Secrets their inputs name, often megabytes of binaryData. As JSON, the API
server base64-encodes those bytes and the operator parses and decodes them again: ten 1 MiB ConfigMaps
took ~350 ms that way on a loaded 2-core machine, ~100 ms as protobuf (nbkube.kube.Kube.get_data asks
for protobuf and takes JSON when the server answers that). Just enough of the protobuf wire format for
these two types is here, rather than a protobuf dependency:

    "k8s\\x00" + runtime.Unknown{typeMeta = 1, raw = 2, contentEncoding = 3, contentType = 4}
    raw: ConfigMap{metadata = 1, data = 2 (map<string, string>), binaryData = 3 (map<string, bytes>), ...}
         Secret{metadata = 1, data = 2 (map<string, bytes>), type = 3, stringData = 4, ...}
    a map: repeated {key = 1, value = 2}

Errors never quote the body (it holds the values).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Any

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
_DATA_FIELDS = {"ConfigMap": (2, 3), "Secret": (2,)}


class UndecodableObject(ValueError):
    """The body is not what a ConfigMap or Secret encodes to (the message never quotes it)."""


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise UndecodableObject("truncated varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, bytes of a length-delimited field; None for other wire types) of one message."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i)
            yield field, None
        elif wire == 2:
            length, i = _varint(buf, i)
            if i + length > n:
                raise UndecodableObject("a field runs past the end of its message")
            yield field, buf[i : i + length]
            i += length
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            yield field, None
        else:
            raise UndecodableObject(f"unsupported wire type {wire}")


def from_protobuf(body: bytes, kind: str) -> dict[str, bytes]:
    """Key -> bytes of a protobuf-encoded ConfigMap (data and binaryData) or Secret (data)."""
    if not body.startswith(MAGIC):
        raise UndecodableObject("not a Kubernetes protobuf object")
    raw = next((value for field, value in _fields(memoryview(body)[len(MAGIC) :]) if field == 2), None)
    if raw is None:
        raise UndecodableObject("no object in the protobuf envelope")
    wanted = _DATA_FIELDS[kind]
    values: dict[str, bytes] = {}
    for field, entry in _fields(raw):
        if field not in wanted or entry is None:
            continue
        key, value = "", b""
        for part, data in _fields(entry):
            if part == 1 and data is not None:
                key = bytes(data).decode("utf-8", "replace")
            elif part == 2 and data is not None:
                value = bytes(data)
        values[key] = value
    return values


def from_json(body: dict[str, Any], kind: str) -> dict[str, bytes]:
    """Key -> bytes of a ConfigMap (data as UTF-8, binaryData) or a Secret (data, base64) in JSON.
    Undecodable values (which the API server never returns) are left out, never reported."""
    values: dict[str, bytes] = {}
    if kind == "ConfigMap":
        for key, text in (body.get("data") or {}).items():
            values[key] = str(text).encode("utf-8")
    encoded = body.get("binaryData" if kind == "ConfigMap" else "data") or {}
    for key, b64 in encoded.items():
        try:
            values[key] = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError, TypeError):
            continue
    return values
