"""The gateway's cut of kernel messages too large for the client's websocket (pure, no processes)."""

from __future__ import annotations

import json
from typing import Any

from nbkube.gateway.oversized import FRAMING_BYTES, message_size, shrink

LIMIT = 256 * 1024


def pack(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def unpack(data: bytes) -> Any:
    return json.loads(data)


def parts(msg_type: str, content: dict[str, Any], *buffers: bytes) -> list[bytes]:
    header = {"msg_id": "m", "msg_type": msg_type, "session": "s", "username": "u", "version": "5.3"}
    return [pack(header), pack({"msg_id": "p"}), pack({}), pack(content), *buffers]


def fits(cut: list[bytes]) -> bool:
    return message_size(cut) + FRAMING_BYTES <= LIMIT


def test_a_huge_stream_keeps_its_beginning_and_says_how_much_was_cut() -> None:
    original = parts("stream", {"name": "stdout", "text": "é" * 1_000_000})
    cut = shrink(original, unpack, pack, LIMIT)
    assert cut is not None and fits(cut)
    content = unpack(cut[3])
    assert content["name"] == "stdout"
    kept, note = content["text"].rstrip("\n").rsplit("\n", 1)
    assert kept and set(kept) == {"é"}  # cut on a character boundary
    assert f"was {message_size(original):,} bytes" in note and f"{LIMIT:,}-byte limit" in note
    assert unpack(cut[0])["msg_type"] == "stream" and unpack(cut[1]) == {"msg_id": "p"}


def test_a_huge_display_becomes_a_plain_text_note_and_loses_its_buffers() -> None:
    data = {"image/png": "A" * 2_000_000, "text/plain": "<Figure>"}
    original = parts(
        "display_data", {"data": data, "metadata": {"x": 1}, "transient": {"display_id": "d"}}, b"b" * 10
    )
    cut = shrink(original, unpack, pack, LIMIT)
    assert cut is not None and fits(cut) and len(cut) == 4
    content = unpack(cut[3])
    assert list(content["data"]) == ["text/plain"] and "output cut" in content["data"]["text/plain"]
    assert content["metadata"] == {} and content["transient"] == {"display_id": "d"}


def test_a_huge_error_keeps_the_end_of_its_traceback() -> None:
    traceback = [f"frame {i} " + "x" * 1000 for i in range(2000)] + ["ValueError: the point"]
    original = parts("error", {"ename": "ValueError", "evalue": "v" * 500_000, "traceback": traceback})
    cut = shrink(original, unpack, pack, LIMIT)
    assert cut is not None and fits(cut)
    content = unpack(cut[3])
    assert content["ename"] == "ValueError" and content["traceback"][-1] == "ValueError: the point"
    assert "output cut" in content["traceback"][0]


def test_a_message_that_is_not_output_is_left_alone() -> None:
    original = parts("comm_msg", {"data": {"blob": "z" * 1_000_000}})
    assert shrink(original, unpack, pack, LIMIT) is None
