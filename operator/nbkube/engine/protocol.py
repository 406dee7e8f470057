"""Jupyter messaging protocol 5.x over the gateway's websocket (the legacy JSON framing)."""

from __future__ import annotations

import itertools
import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

PROTOCOL_VERSION = "5.3"
# jupyter_server's binary websocket subprotocol: the server forwards the kernel's frames as they are
# instead of deserializing and re-serializing every message (less gateway CPU per message).
WS_PROTOCOL_V1 = "v1.kernel.websocket.jupyter.org"

Message = dict[str, Any]


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def make_message(
    channel: str,
    msg_type: str,
    content: dict[str, Any],
    session: str,
    *,
    parent: dict[str, Any] | None = None,
    msg_id: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Message:
    return {
        "channel": channel,
        "header": {
            "msg_id": msg_id or new_id(),
            "msg_type": msg_type,
            "username": "nbkube",
            "session": session,
            "date": utcnow_iso(),
            "version": PROTOCOL_VERSION,
        },
        "parent_header": parent or {},
        "metadata": metadata or {},
        "content": content,
        "buffers": [],
    }


def encode(message: Message) -> str:
    return json.dumps(message, separators=(",", ":"))


def encode_v1(message: Message) -> bytes:
    """[count][offsets] as little-endian uint64; then channel, header, parent, metadata, content, buffers."""
    parts = [
        message["channel"].encode(),
        json.dumps(message["header"], separators=(",", ":")).encode(),
        json.dumps(message["parent_header"], separators=(",", ":")).encode(),
        json.dumps(message["metadata"], separators=(",", ":")).encode(),
        json.dumps(message["content"], separators=(",", ":")).encode(),
        *message.get("buffers", ()),
    ]
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return b"".join([struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets), *parts])


def decode_v1(data: bytes) -> Message:
    (count,) = struct.unpack_from("<Q", data)
    offsets = struct.unpack_from(f"<{count}Q", data, 8)
    parts = [data[start:stop] for start, stop in itertools.pairwise(offsets)]
    return {
        "channel": parts[0].decode(),
        "header": json.loads(parts[1]),
        "parent_header": json.loads(parts[2]),
        "metadata": json.loads(parts[3]),
        "content": json.loads(parts[4]),
        "buffers": parts[5:],
    }


def decode_text(data: str) -> Message:
    message: Message = json.loads(data)
    return message


def decode_binary(data: bytes) -> Message:
    """The legacy binary frame: uint32 count n, n uint32 offsets, then the JSON message and its buffers."""
    (count,) = struct.unpack("!I", data[:4])
    offsets = [*struct.unpack("!" + "I" * count, data[4 : 4 * (count + 1)]), len(data)]
    message: Message = json.loads(data[offsets[0] : offsets[1]].decode("utf-8"))
    message["buffers"] = [data[start:stop] for start, stop in itertools.pairwise(offsets[1:])]
    return message


def parent_id(message: Message) -> str | None:
    parent = message.get("parent_header")
    return parent.get("msg_id") if parent else None
