"""Failure semantics against real gateways: timeout, kernel death, cancel, a killed gateway, bad token."""

from __future__ import annotations

import asyncio
import time

import pytest
from engine_helpers import notebook, start_gateway, stream_text
from nbkube.engine import (
    AuthenticationError,
    CellState,
    GatewayClient,
    GatewayUnavailable,
    KernelConnection,
    KernelNotFound,
    NotebookExecutor,
)
from nbkube.gateway.local import LocalGateway, free_port

pytestmark = [pytest.mark.gateway, pytest.mark.timeout(180)]


async def test_cell_timeout_interrupts_the_cell_and_the_kernel_stays_usable(kernel: KernelConnection) -> None:
    nb = notebook(
        "state = 'kept'", "import time\nprint('before', flush=True)\ntime.sleep(60)", "print(state)"
    )
    executor = NotebookExecutor(kernel, cell_timeout=1.0)
    result = await executor.execute_notebook(nb)

    assert result.state is CellState.TIMED_OUT
    assert result.failed_index == 1
    timed_out = result.cells[1]
    assert timed_out.state is CellState.TIMED_OUT
    assert timed_out.error_name == "CellTimeout"
    assert not timed_out.kernel_restarted
    assert stream_text(nb.cells[1]) == "before\n"
    assert any(o.get("ename") == "KeyboardInterrupt" for o in nb.cells[1].outputs)
    print(f"timed-out cell ended after {timed_out.duration_ms:.0f} ms (timeout 1000 ms)")

    # Same kernel, same state: the interrupted cell did not take the kernel down.
    after = await executor.execute_cell(nb.cells[2], 2)
    assert after.state is CellState.SUCCEEDED
    assert stream_text(nb.cells[2]) == "kept\n"


async def test_uninterruptible_cell_times_out_by_restarting_the_kernel(kernel: KernelConnection) -> None:
    nb = notebook("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)")
    result = await NotebookExecutor(kernel, cell_timeout=0.5, interrupt_grace=1.0).execute_notebook(nb)
    assert result.cells[0].state is CellState.TIMED_OUT
    assert result.cells[0].kernel_restarted


async def test_kernel_death_fails_the_cell_as_kernel_died(kernel: KernelConnection) -> None:
    nb = notebook("x = 1", "print('dying', flush=True)\nimport os\nos._exit(1)", "print('never')")
    started = time.monotonic()
    async with asyncio.timeout(60):  # a hang guard, not a measurement
        result = await NotebookExecutor(kernel).execute_notebook(nb)
    died = result.cells[1]
    print(
        f"kernelDied reported {died.duration_ms:.0f} ms after the cell started "
        f"({time.monotonic() - started:.2f}s total)"
    )

    assert result.state is CellState.KERNEL_DIED
    assert died.state is CellState.KERNEL_DIED
    assert died.error_name == "KernelDied"
    assert "restarting" in (died.error_value or "")
    assert result.cells[2].state is CellState.PENDING
    assert nb.cells[1].outputs[-1]["ename"] == "KernelDied"


async def test_kernel_death_is_caught_by_the_watchdog_when_the_status_message_is_missed(
    client: GatewayClient,
) -> None:
    """The gateway sends `restarting` only to a connected websocket: keep ours away while the kernel dies,
    and the watchdog (a different kernel process answering on the control channel) must fail the cell."""
    model = await client.start_kernel("python3")
    connection = await client.connect(model["id"])
    try:
        nb = notebook("import os, time\nprint('up', flush=True)\ntime.sleep(1.0)\nos._exit(1)")

        async def disconnect_through_the_death(index: int, output: dict) -> None:
            await connection.drop_websocket(stay_away=3.0)

        executor = NotebookExecutor(connection, on_output=disconnect_through_the_death)
        async with asyncio.timeout(60):  # a hang guard
            result = await executor.execute_notebook(nb)
        died = result.cells[0]
        assert died.state is CellState.KERNEL_DIED
        assert "new kernel process" in (died.error_value or "")
        assert connection.kernel_lost_events == 0  # the status message really was missed
        assert connection.reconnects == 1
    finally:
        await connection.close()
        await client.delete_kernel(model["id"])


async def test_kernel_death_between_cells_stops_the_notebook_before_the_next_cell(
    kernel: KernelConnection,
) -> None:
    nb = notebook(
        "state = 'set'",
        "import os, threading\nthreading.Timer(0.3, lambda: os._exit(1)).start()",
        "print(state)",
    )

    async def linger_after_second_cell(index: int, result: object) -> None:
        if index == 1:
            for _ in range(100):  # until the gateway reports the death (a hang guard bounds it)
                if kernel.kernel_lost_events:
                    break
                await asyncio.sleep(0.1)

    executor = NotebookExecutor(kernel, on_cell_end=linger_after_second_cell)
    result = await executor.execute_notebook(nb)
    assert [c.state for c in result.cells] == [
        CellState.SUCCEEDED,
        CellState.SUCCEEDED,
        CellState.KERNEL_DIED,
    ]
    assert result.state is CellState.KERNEL_DIED and result.failed_index == 2
    assert "between cells" in (result.cells[2].error_value or "")
    assert nb.cells[2].outputs == []  # never sent to the fresh kernel


async def test_cancel_interrupts_the_running_cell_and_ends_the_notebook(kernel: KernelConnection) -> None:
    nb = notebook("import time\nprint('started', flush=True)\ntime.sleep(60)", "print('not run')")
    executor = NotebookExecutor(kernel)

    def cancel_on_first_output(index: int, output: dict) -> None:
        executor.cancel()

    executor.on_output = cancel_on_first_output
    result = await executor.execute_notebook(nb)
    assert result.state is CellState.CANCELLED
    assert [c.state for c in result.cells] == [CellState.CANCELLED, CellState.PENDING]
    assert nb.cells[1].outputs == []


async def test_killed_gateway_mid_cell_raises_gateway_unavailable(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    gw = start_gateway(tmp_path_factory)
    try:
        async with GatewayClient(gw.url, gw.token, request_timeout=5, reconnect_timeout=2) as client:
            model = await client.start_kernel("python3")
            connection = await client.connect(model["id"])
            nb = notebook("import time\nprint('running', flush=True)\ntime.sleep(60)")
            executor = NotebookExecutor(connection, on_output=lambda i, o: gw.kill())
            started = time.monotonic()
            with pytest.raises(GatewayUnavailable) as raised:
                async with asyncio.timeout(60):
                    await executor.execute_notebook(nb)
            print(f"GatewayUnavailable after {time.monotonic() - started:.2f}s: {raised.value}")
            partial = raised.value.partial_result
            assert partial is not None and partial.cells == []  # the cell never finished
            assert stream_text(nb.cells[0]) == "running\n"
            with pytest.raises(GatewayUnavailable):
                await client.list_kernels()
            await connection.close()
    finally:
        gw.stop()


async def test_wrong_token_is_an_authentication_error(gateway: LocalGateway) -> None:
    async with GatewayClient(gateway.url, "not-the-token") as client:
        with pytest.raises(AuthenticationError, match="401"):
            await client.start_kernel("python3")
        with pytest.raises(AuthenticationError):
            await client.connect("00000000-0000-0000-0000-000000000000")


async def test_unreachable_gateway_is_gateway_unavailable() -> None:
    async with GatewayClient(f"http://127.0.0.1:{free_port()}", "t", request_timeout=5) as client:
        with pytest.raises(GatewayUnavailable, match="unreachable"):
            await client.list_kernels()


async def test_unknown_kernel_is_kernel_not_found(client: GatewayClient) -> None:
    with pytest.raises(KernelNotFound):
        await client.get_kernel("00000000-0000-0000-0000-000000000000")
    with pytest.raises(KernelNotFound):
        await client.connect("00000000-0000-0000-0000-000000000000")


async def test_restarting_a_kernel_the_gateway_no_longer_has_is_kernel_not_found_at_once(
    client: GatewayClient,
) -> None:
    """The gateway answers 500 to a restart of a kernel it removed (deleted, or given up on after
    repeated deaths), as it does during its own restart of a dying one, which is retried: a kernel that
    is gone is found so at once instead of after request_timeout of retries."""
    model = await client.start_kernel("python3")
    await client.delete_kernel(model["id"])
    slow = GatewayClient(client.base_url, client.token, request_timeout=600)
    try:
        async with asyncio.timeout(30):
            with pytest.raises(KernelNotFound):
                await slow.restart_kernel(model["id"])
    finally:
        await slow.close()


async def test_with_allow_errors_a_timed_out_cell_keeps_its_error_and_the_notebook_goes_on(
    kernel: KernelConnection,
) -> None:
    nb = notebook(
        "state = 'kept'", "import time\nprint('before', flush=True)\ntime.sleep(60)", "print(state)"
    )
    result = await NotebookExecutor(kernel, cell_timeout=1.0, allow_errors=True).execute_notebook(nb)

    assert result.state is CellState.SUCCEEDED
    assert result.failed_index is None
    timed_out, after = result.cells[1], result.cells[2]
    assert (timed_out.state, timed_out.error_name, timed_out.error_allowed) == (
        CellState.TIMED_OUT,
        "CellTimeout",
        True,
    )
    assert stream_text(nb.cells[1]) == "before\n"
    assert any(o.get("ename") == "KeyboardInterrupt" for o in nb.cells[1].outputs)
    assert after.state is CellState.SUCCEEDED
    assert stream_text(nb.cells[2]) == "kept\n"  # the same kernel, its state intact


async def test_with_allow_errors_a_cell_only_a_restart_stopped_still_ends_the_notebook(
    kernel: KernelConnection,
) -> None:
    nb = notebook(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)", "print('never')"
    )
    executor = NotebookExecutor(kernel, cell_timeout=0.5, interrupt_grace=1.0, allow_errors=True)
    result = await executor.execute_notebook(nb)
    assert result.state is CellState.TIMED_OUT and result.failed_index == 0
    assert result.cells[0].kernel_restarted and not result.cells[0].error_allowed
    assert result.cells[1].state is CellState.PENDING


async def test_a_kernel_that_dies_young_answers_again_on_the_same_connection(
    kernel: KernelConnection,
) -> None:
    """Killed in its first seconds, the gateway's restarter brings the kernel back at once. A stock
    gateway does that on new ports, where this connection's channels never reached it again (a session's
    next execution waited forever). Here it answers again once reconnected, and after a restart."""
    nb = notebook("import os\nos._exit(1)", "x = 1\nprint('after')", "print('x' in dir())")
    async with asyncio.timeout(90):  # a hang guard, not a measurement
        died = await NotebookExecutor(kernel).execute_cell(nb.cells[0], 0)
        assert died.state is CellState.KERNEL_DIED
        await kernel.reconnect()
        await kernel.until_answering(20)
        after = await NotebookExecutor(kernel).execute_cell(nb.cells[1], 1)  # as a session's next one
        assert after.state is CellState.SUCCEEDED, after
        assert stream_text(nb.cells[1]) == "after\n"

        await kernel.restart_kernel()
        await kernel.until_answering(20)
        fresh = await NotebookExecutor(kernel).execute_cell(nb.cells[2], 2)
    assert fresh.state is CellState.SUCCEEDED, fresh
    assert stream_text(nb.cells[2]) == "False\n"  # a new process: the state is gone
