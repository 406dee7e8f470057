"""Hostile or broken output never costs a result: every output counts against the caps, an oversized
websocket message is cut by the gateway (or, from a gateway that does not cut, becomes a marker), with
bounded memory, and an invalid output becomes a marker so the notebook always validates. Real kernels
through the real gateway."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nbformat
import psutil
import pytest
from engine_helpers import fresh_kernel, notebook, start_gateway, stream_text
from nbformat import NotebookNode
from nbkube.engine import (
    CellState,
    GatewayClient,
    KernelConnection,
    NotebookExecutor,
    NotebookResult,
    OutputLimits,
)
from nbkube.engine.outputs import ERROR_ALLOWANCE, message_limit, output_bytes
from nbkube.gateway.local import LocalGateway
from nbkube.gateway.oversized import MAX_SPLIT_BYTES

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(300)]

MiB = 1024 * 1024


def kept(cell: NotebookNode) -> int:
    """Bytes a cell keeps, its truncation marker aside."""
    return sum(output_bytes(o) for o in cell.outputs if "[nbkube: output truncated" not in o.get("text", ""))


def marker(cell: NotebookNode) -> str:
    last = cell.outputs[-1]
    assert last["output_type"] == "stream" and "[nbkube: output truncated" in last["text"], cell.outputs
    return str(last["text"])


async def executed_with_peak(executor: NotebookExecutor, nb: NotebookNode) -> tuple[NotebookResult, int]:
    """The notebook's result and the peak of what this process allocated meanwhile (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = await executor.execute_notebook(nb)
        return result, tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def spill_records(path: Path | None) -> list[dict]:
    assert path is not None
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


SMALL_MESSAGES = message_limit(OutputLimits(cell_bytes=MiB))
"""A websocket limit for a 1 MiB cell cap."""


@contextlib.asynccontextmanager
async def kernel_on(
    gateway: LocalGateway, max_msg_size: int | None = None
) -> AsyncIterator[KernelConnection]:
    """A fresh kernel on its own client of the gateway (max_msg_size: its websocket's limit)."""
    async with GatewayClient(
        gateway.url, gateway.token, reconnect_timeout=5, max_msg_size=max_msg_size
    ) as client:
        async with fresh_kernel(client) as connection:
            yield connection


@pytest.fixture
async def small_messages(gateway: LocalGateway) -> AsyncIterator[KernelConnection]:
    async with kernel_on(gateway, SMALL_MESSAGES) as connection:
        yield connection


@pytest.fixture(scope="module")
def uncut_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGateway]:
    """A gateway that sends oversized messages as they are, as other gateways do: the websocket refuses
    them (1009) and the engine's own handling takes over."""
    gateway = start_gateway(tmp_path_factory, "--NoDelayWebsocketConnection.cut_oversized=False")
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
async def uncut_kernel(uncut_gateway: LocalGateway) -> AsyncIterator[KernelConnection]:
    async with kernel_on(uncut_gateway) as connection:
        yield connection


@pytest.fixture
async def uncut_small_messages(uncut_gateway: LocalGateway) -> AsyncIterator[KernelConnection]:
    async with kernel_on(uncut_gateway, SMALL_MESSAGES) as connection:
        yield connection


async def test_display_updates_count_against_the_cell_cap(kernel: KernelConnection, tmp_path: Path) -> None:
    """20 outputs show one display; one 200 KB update would put 4 MB in a cell capped at 1 MiB."""
    nb = notebook(
        "from IPython.display import display, update_display\n"
        "for _ in range(20):\n    display('small', display_id='d')\n"
        "update_display({'text/plain': 'u' * 200_000}, display_id='d', raw=True)",
        "display('x', display_id='e')",
        "update_display({'text/plain': 'v' * 3_000_000}, display_id='e', raw=True)\nprint('after')",
    )
    limits = OutputLimits(cell_bytes=MiB, notebook_bytes=2 * MiB, spill_dir=tmp_path)
    result = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)

    assert [c.state for c in result.cells] == [CellState.SUCCEEDED] * 3
    first, second, third = nb.cells
    assert kept(first) <= MiB
    assert result.cells[0].truncated and "display update(s) did not fit" in marker(first)
    # (5 of the 20 outputs took the update: 5 * 200 KB fit in 1 MiB, the others kept 'small')
    assert sum(o["data"]["text/plain"] == "'small'" for o in first.outputs[:-1]) == 15
    # An update from a later cell that does not fit its target's cell is refused there, marked here.
    assert second.outputs[0]["data"]["text/plain"] == "'x'"
    assert result.cells[2].truncated and "display update(s) did not fit" in marker(third)
    assert stream_text(third) == "after\n"  # (a refused update does not drop the cell's later outputs)
    records = spill_records(result.spill_path)
    updates = [r for r in records if r.get("update_display_id") == "e"]
    assert len(updates) == 1 and updates[0]["output"]["data"]["text/plain"] == "v" * 3_000_000
    nbformat.validate(nb)


async def test_errors_count_against_the_cell_cap(kernel: KernelConnection, tmp_path: Path) -> None:
    """Three 1 MB errors in a cell capped at 1 MiB: the first fits, the others are shown short; all counted,
    the full ones in the spill."""
    nb = notebook(
        "ip = get_ipython()\nfor i in range(3):\n    try:\n        raise ValueError(str(i) * 1_000_000)\n"
        "    except ValueError:\n        ip.showtraceback()",
        "raise KeyError('k' * 3_000_000)",
    )
    limits = OutputLimits(cell_bytes=MiB, spill_dir=tmp_path)
    result = await NotebookExecutor(kernel, limits=limits).execute_notebook(nb)

    first, second = result.cells
    assert first.state is CellState.SUCCEEDED and first.truncated
    errors = [o for o in nb.cells[0].outputs if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["ValueError"] * 3  # still visible
    assert len(errors[0]["evalue"]) == 1_000_000  # the first fits the cap
    assert all(len(e["evalue"]) < 4096 for e in errors[1:])  # the others are shown short
    assert kept(nb.cells[0]) <= MiB + ERROR_ALLOWANCE
    assert first.output_bytes > 3_000_000  # every byte counted
    spilled = [r["output"] for r in spill_records(result.spill_path) if r["index"] == 0]
    assert [len(o["evalue"]) for o in spilled] == [1_000_000] * 3

    assert second.state is CellState.FAILED and second.error_name == "KeyError"
    assert second.truncated and kept(nb.cells[1]) <= ERROR_ALLOWANCE
    assert len(second.error_value or "") <= 2000
    nbformat.validate(nb)


async def test_a_300_mb_print_is_split_then_cut_by_the_gateway_and_the_cell_carries_on_with_bounded_memory(
    kernel: KernelConnection, tmp_path: Path
) -> None:
    """One print of 300 MB: the gateway, told the websocket's limit, sends its first 256 MiB as stream
    messages that fit and cuts the rest, saying so; the engine keeps the cell cap and spills the rest
    of what arrived. No reconnect, nothing after it lost. tracemalloc measures what the engine (this
    process) allocated meanwhile."""
    nb = notebook(
        "import time\nprint('before', flush=True)\nprint('x' * 300_000_000)\ntime.sleep(1.0)\nprint('after')",
        "print('next')",
    )
    limits = OutputLimits(spill_dir=tmp_path)
    result, peak = await executed_with_peak(NotebookExecutor(kernel, limits=limits), nb)
    print(f"engine while a cell printed 300 MB at once, cut by the gateway: peak {peak / MiB:.1f} MiB")

    first, second = result.cells
    assert first.state is CellState.SUCCEEDED and first.truncated
    assert "[nbkube: output truncated" in marker(nb.cells[0])
    records = spill_records(result.spill_path)
    spilled_text = "".join(r["output"].get("text", "") for r in records if r["index"] == 0)
    assert spilled_text.count("x") == MAX_SPLIT_BYTES  # every piece, in order, up to the split cap
    assert first.output_bytes > MAX_SPLIT_BYTES
    said = re.search(r"nbkube gateway: output cut; the kernel's message was ([\d,]+) bytes", spilled_text)
    assert said is not None and int(said.group(1).replace(",", "")) > 300_000_000
    assert "after\n" in spilled_text
    assert kernel.reconnects == 0 and kernel.oversized_messages == 0
    assert second.state is CellState.SUCCEEDED and stream_text(nb.cells[1]) == "next\n"
    assert peak < 32 * MiB
    nbformat.validate(nb)


async def test_a_300_mb_print_from_a_gateway_that_does_not_cut_becomes_a_marker_with_bounded_memory(
    uncut_kernel: KernelConnection, tmp_path: Path
) -> None:
    """One print of 300 MB: refused from its frame header by the websocket (limit: the 4 MiB cell cap
    plus headroom), marked in the cell, the connection reset once; the cell carries on and so does the
    notebook. tracemalloc measures what the engine (this process) allocated meanwhile."""
    kernel = uncut_kernel
    nb = notebook(
        # One write, newline included: print() writes the newline apart, and whether the kernel's stream
        # batching sends it with the 300 MB or after it (then kept, as a blank line) is timing.
        "import sys, time\nprint('before', flush=True)\nsys.stdout.write('x' * 300_000_000 + '\\n')\n"
        "time.sleep(3.0)\nprint('after')",
        "print('next')",
    )
    limits = OutputLimits(spill_dir=tmp_path)
    process = psutil.Process()
    rss_peak = rss_before = process.memory_info().rss

    def sample(index: int, output: dict) -> None:
        nonlocal rss_peak
        rss_peak = max(rss_peak, process.memory_info().rss)

    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = await NotebookExecutor(kernel, limits=limits, on_output=sample).execute_notebook(nb)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    rss_peak = max(rss_peak, process.memory_info().rss)
    print(
        f"engine while a cell printed 300 MB at once: tracemalloc peak {peak / MiB:.1f} MiB, "
        f"RSS growth {(rss_peak - rss_before) / MiB:.1f} MiB"
    )

    first, second = result.cells
    assert first.state is CellState.SUCCEEDED and first.truncated
    text = marker(nb.cells[0])
    assert "exceeded the websocket's limit" in text and str(message_limit(limits)) in text
    assert first.output_bytes >= 300_000_000  # counted, from the frame header
    assert stream_text(nb.cells[0]) == "before\nafter\n"
    # (one reconnect for the refused message; the shell check may add one: the cell outlasts its timeout)
    assert kernel.reconnects - kernel.shell_resets == 1 and kernel.oversized_messages == 1
    assert second.state is CellState.SUCCEEDED and stream_text(nb.cells[1]) == "next\n"
    assert peak < 16 * MiB and rss_peak - rss_before < 64 * MiB
    nbformat.validate(nb)


async def test_300_mb_printed_in_chunks_keeps_engine_memory_near_the_cap(
    kernel: KernelConnection, tmp_path: Path
) -> None:
    nb = notebook(f"block = 'z' * {MiB - 1}\nfor i in range(300):\n    print(block, flush=True)")
    limits = OutputLimits(spill_bytes=16 * MiB, spill_dir=tmp_path)
    result, peak = await executed_with_peak(NotebookExecutor(kernel, limits=limits), nb)
    print(f"engine tracemalloc peak while a cell printed 300 x 1 MiB: {peak / MiB:.1f} MiB")
    cell = result.cells[0]
    assert cell.state is CellState.SUCCEEDED and cell.truncated
    assert cell.output_bytes == 300 * MiB and kept(nb.cells[0]) == limits.cell_bytes
    assert peak < 48 * MiB


async def test_an_oversized_last_output_is_cut_and_the_next_cell_runs(
    small_messages: KernelConnection,
) -> None:
    """The oversized message is the cell's last: cut by the gateway instead of refused by the websocket,
    nothing written after it (the reply, the idle, the next cell's messages) is lost, so every cell
    succeeds, three times over on one connection."""
    for _ in range(3):
        nb = notebook("print('before', flush=True)\nprint('x' * 5_000_000)", "print('next')")
        limits = OutputLimits(cell_bytes=MiB)
        result = await asyncio.wait_for(
            NotebookExecutor(small_messages, limits=limits, cell_timeout=60).execute_notebook(nb), 60
        )
        first, second = result.cells
        assert first.state is CellState.SUCCEEDED and first.truncated
        assert "[nbkube: output truncated" in marker(nb.cells[0])
        assert stream_text(nb.cells[0]).startswith("before\nxxx")
        assert second.state is CellState.SUCCEEDED and stream_text(nb.cells[1]) == "next\n"
        nbformat.validate(nb)
    assert small_messages.reconnects == 0 and small_messages.oversized_messages == 0


async def test_an_oversized_message_replayed_after_a_reconnect_does_not_loop(
    uncut_small_messages: KernelConnection,
) -> None:
    """The kernel prints 5 MB while the engine is away; the gateway buffers it and replays it on the
    reconnect; the websocket refuses it (1009) and reconnects again. The gateway's replay buffer is
    taken on the first reconnect, so the second one does not get the huge message again: two reconnects
    in all, and the cell carries on."""
    kernel = uncut_small_messages

    async def away_after_tick(index: int, output: dict) -> None:
        if output.get("text", "").startswith("tick"):
            await kernel.drop_websocket(stay_away=1.0)

    nb = notebook(
        "import time\nprint('tick', flush=True)\ntime.sleep(0.5)\nprint('y' * 5_000_000, flush=True)\n"
        "time.sleep(2.0)\nprint('after', flush=True)",
        "print('next')",
    )
    limits = OutputLimits(cell_bytes=MiB)
    executor = NotebookExecutor(kernel, limits=limits, on_output=away_after_tick, cell_timeout=60)
    result = await asyncio.wait_for(executor.execute_notebook(nb), 60)

    first, second = result.cells
    assert first.state is CellState.SUCCEEDED and first.truncated
    assert "exceeded the websocket's limit" in marker(nb.cells[0])
    assert stream_text(nb.cells[0]) == "tick\nafter\n"
    assert second.state is CellState.SUCCEEDED and stream_text(nb.cells[1]) == "next\n"
    await asyncio.sleep(1.0)
    assert kernel.oversized_messages == 1 and kernel.reconnects - kernel.shell_resets == 2
    nbformat.validate(nb)


SEND = "k = get_ipython().kernel\nparent = k.get_parent()\n"


async def test_invalid_outputs_become_markers_and_the_notebook_validates(kernel: KernelConnection) -> None:
    nb = notebook(
        "from IPython.display import publish_display_data\npublish_display_data({'text/plain': 5})",
        SEND + "k.session.send(k.iopub_socket, 'stream', {'name': 'stdout', 'text': 5}, parent=parent)\n"
        "k.session.send(k.iopub_socket, 'error', {'ename': 5, 'evalue': None, 'traceback': 'tb'},"
        " parent=parent)\n"
        "k.session.send(k.iopub_socket, 'execute_result', {'data': {'application/json': {'a': [1]}, "
        "'text/html': ['<b>', 'ok</b>']}, 'metadata': [], 'execution_count': 'x'}, parent=parent)\n"
        "k.session.send(k.iopub_socket, 'display_data', {'data': ['not', 'a', 'bundle']}, parent=parent);",
        "from IPython.display import display, update_display\ndisplay('ok', display_id='d')\n"
        "update_display({'text/plain': 5}, display_id='d', raw=True)",
        "print('still running')",
    )
    result = await NotebookExecutor(kernel).execute_notebook(nb)
    assert [c.state for c in result.cells] == [CellState.SUCCEEDED] * 4

    def dropped(cell: NotebookNode) -> list[str]:
        return [o["text"] for o in cell.outputs if "[nbkube: dropped an invalid" in o.get("text", "")]

    assert dropped(nb.cells[0]) == [
        "[nbkube: dropped an invalid display_data output from the kernel: "
        "data['text/plain'] is int, not a string or a list of strings]\n"
    ]
    second = nb.cells[1].outputs
    assert len(dropped(nb.cells[1])) == 2  # the stream and the non-bundle display
    error = next(o for o in second if o["output_type"] == "error")
    assert (error["ename"], error["evalue"], error["traceback"]) == ("5", "", ["tb"])  # coerced
    execute_result = next(o for o in second if o["output_type"] == "execute_result")
    assert execute_result["execution_count"] is None and execute_result["metadata"] == {}
    assert execute_result["data"]["application/json"] == {"a": [1]}
    third = nb.cells[2].outputs
    assert third[0]["data"]["text/plain"] == "'ok'"  # the invalid update was not applied
    assert "update_display_data" in dropped(nb.cells[2])[0]
    assert stream_text(nb.cells[3]) == "still running\n"
    nbformat.validate(nb)
    nbformat.validate(nbformat.reads(nbformat.writes(nb), as_version=4))
