"""Jupyter messaging protocol 5.x over the gateway's websocket (the legacy JSON framing)."""

from __future__ import annotations

import itertools
import json
import struct
import uuid
from datetime import UTC, datetime
from typing import Any

PROTOCOL_VERSION = "5.3"

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
