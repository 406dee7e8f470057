"""Outputs recorded in a journal are rebuilt within the caps, as if they had just arrived."""

from __future__ import annotations

import asyncio

from nbkube.engine import OutputLimits, bounded_outputs
from nbkube.engine.outputs import output_bytes


def stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_journaled_stream_chunks_are_joined_and_kept_whole_under_the_cap() -> None:
    outputs = asyncio.run(bounded_outputs([stream("a\n"), stream("b\n")], OutputLimits()))
    assert outputs == [stream("a\nb\n")]


def test_journaled_outputs_past_the_cell_cap_are_cut_with_a_marker() -> None:
    error = {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["E: v"]}
    journaled = [stream("x" * 1000) for _ in range(10)] + [error]
    outputs = asyncio.run(bounded_outputs(journaled, OutputLimits(cell_bytes=2500)))
    assert outputs[0] == stream("x" * 2500)
    assert outputs[1]["output_type"] == "error"  # an error past the cap stays visible
    marker = outputs[-1]["text"]
    e = output_bytes(error)
    assert f"produced {10000 + e} bytes of output, {2500 + e} kept here" in marker
    assert "the spill is full (cap 0 bytes)" in marker
