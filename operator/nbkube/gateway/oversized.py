"""Kernel messages too large for the client's websocket, cut down in the gateway before they are sent.

A websocket client refuses a message over its size limit by closing the connection (1009), and what
the gateway wrote after that message (the cell's reply, its idle status, the next cell's messages) is
lost with it. So the gateway, told the client's limit (the `nbkube_max_message` query parameter of the
channels URL, see NoDelayWebsocketConnection), never sends such a message. A stream message (printed
text: ipykernel gathers what a fast loop prints into one message) is split into several that fit,
losing nothing up to MAX_SPLIT_BYTES; any other output is cut to fit, with a note saying how much was
dropped. Everything after it arrives as usual.

Kernel-side module: stdlib and jupyter_client's Session only.
"""

from __future__ import annotations

from typing import Any

# The channels URL's query parameter by which a client gives its websocket's message size limit.
MAX_MESSAGE_PARAMETER = "nbkube_max_message"
# Room left for the v1 framing (offsets, channel name) and the note itself.
FRAMING_BYTES = 1024
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "update_display_data", "error", "execute_input")
MIN_LIMIT = 64 * 1024
# A stream message is split into pieces up to this much text; the rest is cut, with the note. What
# the client keeps is capped anyway (a session's artifact holds 256 MiB of one execution).
MAX_SPLIT_BYTES = 256 * 1024 * 1024
# The text of one piece: small, so the pieces a client queues (16 a subscription) hold little memory.
PIECE_BYTES = 1024 * 1024


def note(size: int, limit: int) -> str:
    return (
        f"[nbkube gateway: output cut; the kernel's message was {size:,} bytes, over the {limit:,}-byte "
        "limit of the client's websocket]"
    )


def message_size(parts: list[Any]) -> int:
    return sum(len(p) for p in parts)


def _cut(text: str, max_bytes: int) -> str:
    if max_bytes <= 0:
        return ""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def _shrunk_content(msg_type: str, content: dict[str, Any], keep: int, marker: str) -> dict[str, Any]:
    """The content with its output cut to about `keep` bytes of text, and the marker."""
    if msg_type == "stream":
        return {**content, "text": _cut(str(content.get("text", "")), keep) + "\n" + marker + "\n"}
    if msg_type in ("display_data", "execute_result", "update_display_data"):
        return {**content, "data": {"text/plain": marker}, "metadata": {}}
    if msg_type == "execute_input":
        return {**content, "code": _cut(str(content.get("code", "")), keep) + "\n# " + marker}
    if msg_type == "error":
        lines = [str(line) for line in content.get("traceback") or []]
        kept: list[str] = []
        budget = keep // 2
        for line in reversed(lines):  # the end of a traceback says what went wrong
            if len(line.encode("utf-8")) > budget:
                break
            kept.insert(0, line)
            budget -= len(line.encode("utf-8"))
        evalue = _cut(str(content.get("evalue", "")), keep // 2)
        return {**content, "evalue": evalue, "traceback": [marker, *kept]}
    return content


def shrink(parts: list[Any], unpack: Any, pack: Any, limit: int) -> list[Any] | None:
    """[header, parent, metadata, content, *buffers] cut to fit `limit` bytes, or None when this kind of
    message cannot be cut (it goes as it is; the client's own limit handling takes over)."""
    size = message_size(parts)
    header = unpack(bytes(parts[0]))
    msg_type = header.get("msg_type") if isinstance(header, dict) else None
    if msg_type not in OUTPUT_TYPES:
        return None
    marker = note(size, limit)
    content = unpack(bytes(parts[3]))
    if not isinstance(content, dict):
        return None
    fixed = len(parts[0]) + len(parts[1]) + FRAMING_BYTES + len(marker) * 2
    metadata = parts[2] if len(parts[2]) < limit // 4 else pack({})
    keep = limit - fixed - len(metadata)
    for _ in range(8):  # JSON escaping can make the text several times its UTF-8 size: scale down
        if keep <= 0:
            break
        packed = pack(_shrunk_content(msg_type, content, keep, marker))
        cut = [parts[0], parts[1], metadata, packed]  # buffers (binary payloads) are dropped
        total = message_size(cut) + FRAMING_BYTES
        if total <= limit:
            return cut
        keep = int(keep * 0.9 * limit / total)
    return None


def split_stream(parts: list[Any], unpack: Any, pack: Any, limit: int) -> list[list[Any]] | None:
    """A `stream` message too large for `limit`, as several stream messages of the same cell that fit,
    its text in order (each with its own msg_id); None for any other message."""
    header = unpack(bytes(parts[0]))
    if not isinstance(header, dict) or header.get("msg_type") != "stream":
        return None
    content = unpack(bytes(parts[3]))
    if not isinstance(content, dict) or not isinstance(content.get("text"), str):
        return None
    text: str = content["text"]
    size = message_size(parts)
    if len(text) > MAX_SPLIT_BYTES:
        text = _cut(text, MAX_SPLIT_BYTES) + "\n" + note(size, limit) + "\n"
    fixed = len(parts[0]) + len(parts[1]) + len(parts[2]) + FRAMING_BYTES + 256
    if fixed * 2 > limit:
        return None
    budget = min(limit - fixed, PIECE_BYTES)
    pieces: list[list[Any]] = []
    start = 0
    while start < len(text):
        chars = budget  # escaping or multi-byte text makes a piece larger: shrink it until it fits
        while True:
            piece = text[start : start + chars]
            packed = pack({**content, "text": piece})
            if len(packed) <= budget or chars <= 1:
                break
            chars = max(1, int(chars * budget / len(packed) * 0.9))
        piece_header = {**header, "msg_id": f"{header.get('msg_id', '')}-{len(pieces)}"}
        pieces.append([pack(piece_header), parts[1], parts[2], packed])
        start += len(piece)
    return pieces
