"""CellOutputs without a kernel: schema checks, display-update accounting, the websocket limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from nbkube.engine import GatewayClient, OutputLimits
from nbkube.engine.outputs import (
    MESSAGE_HEADROOM,
    CellOutputs,
    NotebookBudget,
    build_output,
    check_bundle,
    message_limit,
)

MiB = 1024 * 1024


def msg(msg_type: str, **content: Any) -> dict[str, Any]:
    return {"header": {"msg_type": msg_type}, "content": content}


def validates(outputs: list[dict[str, Any]]) -> None:
    cell = new_code_cell("x")
    cell.outputs = outputs
    nbformat.validate(new_notebook(cells=[cell]))


def test_the_websocket_limit_sits_near_the_cell_cap() -> None:
    default = OutputLimits()
    assert GatewayClient("http://gw", None).max_msg_size == message_limit(default)
    assert message_limit(default) == default.cell_bytes + default.cell_bytes // 4 + MESSAGE_HEADROOM
    assert message_limit(default) < 2 * default.cell_bytes
    assert message_limit(OutputLimits(cell_bytes=MiB)) < message_limit(default)
    assert GatewayClient("http://gw", None, max_msg_size=123).max_msg_size == 123


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"text/plain": "a", "text/html": ["<b>", "</b>"]}, None),
        ({"application/json": {"a": [1, None]}, "application/vnd.x+json": 5}, None),
        ({"text/plain": 5}, "data['text/plain'] is int, not a string or a list of strings"),
        ({"text/plain": ["a", 1]}, "data['text/plain'] is list, not a string or a list of strings"),
        ({"image/png": None}, "data['image/png'] is null, not a string or a list of strings"),
        ({"application/jsonx": {}}, "data['application/jsonx'] is dict, not a string or a list of strings"),
        (["text/plain"], "data is list, not an object"),
    ],
)
def test_mime_bundles_are_checked_like_the_schema(data: Any, problem: str | None) -> None:
    assert check_bundle(data) == problem
    if problem is None:
        validates([{"output_type": "display_data", "data": data, "metadata": {}}])


async def test_invalid_outputs_become_markers_and_errors_are_coerced(tmp_path: Path) -> None:
    cell = CellOutputs(NotebookBudget(OutputLimits(spill_dir=tmp_path)), 0, "c")
    await cell.handle(msg("stream", name="stdout", text=["a", "b"]))
    await cell.handle(msg("stream", name=None, text="x"))
    await cell.handle(msg("display_data", data={"text/plain": 5}, metadata={}))
    await cell.handle(msg("execute_result", data={}, metadata=None, execution_count=-1))
    await cell.handle(msg("error", ename=None, evalue=3, traceback=["x", 4]))
    outputs = await cell.finish()
    assert outputs[0]["text"] == "ab"
    markers = outputs[1]["text"]  # (one stderr stream: consecutive markers merge like any stream)
    assert "stream name is null" in markers and "data['text/plain'] is int" in markers
    assert outputs[2]["metadata"] == {} and outputs[2]["execution_count"] is None
    assert (outputs[3]["ename"], outputs[3]["evalue"], outputs[3]["traceback"]) == ("", "3", ["x", "4"])
    assert cell.invalid == 2
    validates(outputs)
    assert build_output("status", {"execution_state": "idle"}) == (None, None)


async def test_a_cleared_display_no_longer_takes_updates_or_budget(tmp_path: Path) -> None:
    budget = NotebookBudget(OutputLimits(cell_bytes=1000, spill_dir=tmp_path))
    cell = CellOutputs(budget, 0, "c")
    await cell.handle(
        msg("display_data", data={"text/plain": "a"}, metadata={}, transient={"display_id": "d"})
    )
    await cell.handle(msg("clear_output", wait=False))
    await cell.handle(
        msg("update_display_data", data={"text/plain": "b" * 900}, transient={"display_id": "d"})
    )
    assert cell.kept == 0 and budget.kept == 0 and budget.displays == {}
    await cell.handle(
        msg("display_data", data={"text/plain": "a"}, metadata={}, transient={"display_id": "d"})
    )
    await cell.handle(
        msg("update_display_data", data={"text/plain": "b" * 900}, transient={"display_id": "d"})
    )
    assert cell.kept == 900 and budget.kept == 900
    await cell.handle(
        msg("update_display_data", data={"text/plain": "c" * 2000}, transient={"display_id": "d"})
    )
    outputs = await cell.finish()
    assert outputs[0]["data"]["text/plain"] == "b" * 900 and cell.kept == 900
    assert cell.updates_dropped == 1 and "1 display update(s) did not fit" in outputs[-1]["text"]
    validates(outputs)
