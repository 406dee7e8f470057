"""Websocket drops and resuming an in-flight cell by msg_id, as a restarted operator does."""

from __future__ import annotations

import asyncio

import pytest
from engine_helpers import notebook, stream_text
from nbkube.engine import (
    CellState,
    ExecutionLost,
    GatewayClient,
    KernelConnection,
    NotebookExecutor,
    ResumePoint,
)
from nbkube.gateway.local import LocalGateway

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(120)]

TICKS = "import time\nfor i in range(6):\n    print('tick', i, flush=True)\n    time.sleep(0.25)\n'done'"
EXPECTED = "".join(f"tick {i}\n" for i in range(6))
# More outputs than a subscription holds (16), produced while no operator is connected.
MANY_TICKS = (
    "import time\nfor i in range(40):\n    print('tick', i, flush=True)\n    time.sleep(0.05)\n'done'"
)


async def test_dropped_websocket_reconnects_with_the_same_session_and_loses_nothing(
    kernel: KernelConnection,
) -> None:
    async def drop_after_second_tick(index: int, output: dict) -> None:
        if output.get("text", "").startswith("tick 1"):
            await kernel.drop_websocket(stay_away=0.8)  # ticks 2-4 happen while nobody is connected

    nb = notebook(TICKS)
    session_before = kernel.session_id
    result = await NotebookExecutor(kernel, on_output=drop_after_second_tick).execute_notebook(nb)

    assert kernel.reconnects == 1
    assert kernel.session_id == session_before
    assert result.cells[0].state is CellState.SUCCEEDED
    assert stream_text(nb.cells[0]) == EXPECTED
    assert nb.cells[0].outputs[-1]["data"]["text/plain"] == "'done'"


async def test_resume_collects_the_rest_of_a_running_cell_without_running_it_again(
    gateway: LocalGateway,
) -> None:
    """Operator A starts a cell and dies; operator B reconnects with A's session_id and the cell's msg_id."""
    async with GatewayClient(gateway.url, gateway.token) as client_a:
        model = await client_a.start_kernel("python3")
        kernel_id = model["id"]
        first = await client_a.connect(kernel_id)
        started: dict[str, str] = {}
        stored = asyncio.Event()

        def remember(index: int, cell: object, msg_id: str) -> None:
            started.update(session_id=first.session_id, msg_id=msg_id)

        received: list[dict] = []
        carried_by: list[str] = []

        def crash_after_first_tick(index: int, output: dict) -> None:
            received.append(dict(output))  # what operator A journals: the output and its message's id
            stored.set()

        nb = notebook("runs = globals().get('runs', 0) + 1", MANY_TICKS, "print('runs', runs)")
        executor_a = NotebookExecutor(
            first,
            on_cell_start=remember,
            on_output=crash_after_first_tick,
            on_output_message=lambda index, msg_id: carried_by.append(msg_id),
        )
        running = asyncio.create_task(executor_a.execute_notebook(nb))
        await stored.wait()
        running.cancel()  # operator A is gone: its task and its websocket
        await first.close()
        with pytest.raises(asyncio.CancelledError):
            await running
        await asyncio.sleep(1.0)  # the operator restarts; the gateway buffers ~20 ticks meanwhile

    async with GatewayClient(gateway.url, gateway.token) as client_b:
        second = await client_b.connect(
            kernel_id,
            session_id=started["session_id"],
            resume_msg_ids=(started["msg_id"],),
            delivered_msg_ids=tuple(carried_by),  # the gateway sends A's last messages again
        )
        try:
            executor_b = NotebookExecutor(second)
            result = await executor_b.execute_notebook(
                nb, resume=ResumePoint(index=1, msg_id=started["msg_id"], outputs=tuple(received))
            )
            resumed = result.cells[0]
            assert resumed.resumed and resumed.msg_id == started["msg_id"]
            assert resumed.state is CellState.SUCCEEDED
            # The outputs after A died were replayed, after those A had received; the cell did not run
            # a second time, and no tick is missing or twice.
            assert stream_text(nb.cells[1]) == "".join(f"tick {i}\n" for i in range(40))
            assert len(nb.cells[1].outputs) == 2  # merged stream, then 'done'
            assert stream_text(nb.cells[1]).count("tick") > 16
            assert nb.cells[1].outputs[-1]["data"]["text/plain"] == "'done'"
            assert [c.state for c in result.cells] == [CellState.SUCCEEDED, CellState.SUCCEEDED]
            assert stream_text(nb.cells[2]) == "runs 1\n"
            assert resumed.execution_count == nb.cells[2].execution_count - 1
        finally:
            await second.close()
            await client_b.delete_kernel(kernel_id)


async def test_resuming_an_execution_the_kernel_never_saw_raises_execution_lost(
    kernel: KernelConnection,
) -> None:
    nb = notebook("x = 1")
    with pytest.raises(ExecutionLost):
        await NotebookExecutor(kernel).resume_cell(nb.cells[0], 0, "0" * 32)
