"""The tuned gateway's kernel managers: batch options for IPython kernels, and cheap activity tracking
that still reports what idle culling needs (execution_state and last_activity)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from engine_helpers import notebook, stream_text, wait_for_state
from jupyter_client.kernelspec import KernelSpec
from nbkube.engine import KernelConnection
from nbkube.engine.client import GatewayClient
from nbkube.engine.executor import CellState, NotebookExecutor
from nbkube.gateway.kernels import (
    IPYKERNEL_BATCH_ARGUMENTS,
    NBKUBE_KERNEL_ARGUMENTS,
    BatchKernelManager,
    runs_ipykernel,
)

pytestmark = [pytest.mark.timeout(120)]


def manager_for(argv: list[str], **config: object) -> BatchKernelManager:
    manager = BatchKernelManager(**config)
    manager._kernel_spec = KernelSpec(argv=argv, display_name="k", language="x")
    return manager


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], True),
        (["python", "-m", "ipykernel", "-f", "{connection_file}"], True),
        (["/opt/venv/bin/ipykernel_launcher.py", "-f", "{connection_file}"], True),
        (["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"], False),
        (["julia", "-i", "kernel.jl", "{connection_file}"], False),
    ],
)
def test_only_ipykernel_specs_count_as_ipython_kernels(argv: list[str], expected: bool) -> None:
    assert runs_ipykernel(argv) is expected


def test_ipython_kernels_get_the_batch_options_and_others_start_as_specified() -> None:
    ipython = manager_for(["/opt/conda/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert ipython.format_kernel_cmd()[-len(IPYKERNEL_BATCH_ARGUMENTS) :] == list(IPYKERNEL_BATCH_ARGUMENTS)
    # an option the caller already passes is not repeated
    cmd = ipython.format_kernel_cmd(extra_arguments=[IPYKERNEL_BATCH_ARGUMENTS[0]])
    assert cmd.count(IPYKERNEL_BATCH_ARGUMENTS[0]) == 1

    other = manager_for(["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"])
    assert not set(IPYKERNEL_BATCH_ARGUMENTS) & set(other.format_kernel_cmd())

    opted_out = manager_for(["/opt/conda/bin/python", "-m", "ipykernel_launcher"], ipykernel_arguments=[])
    assert opted_out.format_kernel_cmd()[-2:] == ["-m", "ipykernel_launcher"]


def test_nbkube_stream_options_go_only_to_kernels_run_by_the_gateways_own_python() -> None:
    own = manager_for([sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert own.format_kernel_cmd()[-len(NBKUBE_KERNEL_ARGUMENTS) :] == list(NBKUBE_KERNEL_ARGUMENTS)

    # a virtualenv's python resolves to the base interpreter, which cannot import what the venv installed
    base = os.path.realpath(sys.executable)
    other_pythons = [base] if base != os.path.abspath(sys.executable) else []
    for python in [*other_pythons, "/opt/conda/bin/python"]:
        cmd = manager_for([python, "-m", "ipykernel_launcher", "-f", "{connection_file}"]).format_kernel_cmd()
        assert not set(NBKUBE_KERNEL_ARGUMENTS) & set(cmd), python

    opted_out = manager_for([sys.executable, "-m", "ipykernel_launcher"], nbkube_kernel_arguments=[])
    assert opted_out.format_kernel_cmd()[-len(IPYKERNEL_BATCH_ARGUMENTS) :] == list(IPYKERNEL_BATCH_ARGUMENTS)


async def evaluate(kernel: KernelConnection, expressions: dict[str, str]) -> dict[str, str]:
    reply = await kernel.request(
        "shell",
        "execute_request",
        {"code": "", "silent": True, "store_history": False, "user_expressions": expressions},
        reply_timeout=30,
    )
    values = reply["content"]["user_expressions"]
    return {name: value["data"]["text/plain"] for name, value in values.items()}


@pytest.mark.gateway
async def test_tuned_gateway_kernels_keep_history_in_memory_and_do_not_sleep_before_replies(
    kernel: KernelConnection,
) -> None:
    values = await evaluate(
        kernel,
        {
            "hist_file": "get_ipython().history_manager.hist_file",
            "sleep": "get_ipython().kernel._execute_sleep",
        },
    )
    assert values == {"hist_file": "':memory:'", "sleep": "0.0"}


@pytest.mark.gateway
async def test_kernels_pack_messages_with_orjson(kernel: KernelConnection) -> None:
    # jupyter_client chooses orjson only when it imports; the kernel extra installs it
    values = await evaluate(kernel, {"packer": "get_ipython().kernel.session.packer"})
    assert values == {"packer": "'orjson'"}


@pytest.mark.gateway
async def test_tuned_gateway_kernels_write_through_nbkubes_stream(kernel: KernelConnection) -> None:
    values = await evaluate(
        kernel, {"stdout": "type(__import__('sys').stdout)", "stderr": "type(__import__('sys').stderr)"}
    )
    expected = "nbkube.gateway.iostream.BatchOutStream"
    assert values == {"stdout": expected, "stderr": expected}


@pytest.mark.gateway
async def test_file_descriptor_output_written_as_a_cell_ends_belongs_to_that_cell(
    kernel: KernelConnection,
) -> None:
    # ipykernel forwards fd 1 and 2 from a pipe-reading thread. Its stock stream lost about 1 in 100 small
    # writes and most large ones (a tail still in the pipe when the cell replied), which then arrived after
    # the idle status. Each cell's text is checked whole, in its own cell and nowhere else.
    pairs = 200
    big = 60_000
    sources = ["import os, subprocess"]
    expected: list[tuple[str, str]] = []
    for i in range(pairs):
        kind = i % 4
        if kind == 0:
            sources.append(f"os.write(1, b'fd{i}\\n')")
            expected.append(("stdout", f"fd{i}\n"))
        elif kind == 1:
            sources.append(f"os.write(2, b'fd{i}\\n')")
            expected.append(("stderr", f"fd{i}\n"))
        elif kind == 2:
            sources.append(f"subprocess.run(['echo', 'fd{i}'])")
            expected.append(("stdout", f"fd{i}\n"))
        else:
            sources.append(f"os.write(1, b'.' * {big} + b'fd{i}\\n')")
            expected.append(("stdout", "." * big + f"fd{i}\n"))
        sources.append("x = 1")
    nb = notebook(*sources)

    result = await NotebookExecutor(kernel).execute_notebook(nb)

    assert result.state is CellState.SUCCEEDED
    wrong = [i for i, (name, text) in enumerate(expected) if stream_text(nb.cells[1 + 2 * i], name) != text]
    strays = [i for i in range(pairs) if nb.cells[2 + 2 * i].outputs]
    assert (wrong, strays) == ([], [])


@pytest.mark.gateway
async def test_stream_output_keeps_its_order_across_print_fd_writes_and_flushes(
    kernel: KernelConnection,
) -> None:
    nb = notebook(
        "import os, sys\n"
        "print('a')\n"
        "sys.stdout.flush()\n"
        "os.write(1, b'b\\n')\n"
        "sys.stdout.flush()\n"
        "print('c', end='')\n"
        "sys.stdout.flush()\n"
        "os.write(1, 'd é\\n'.encode())\n"
        "sys.stdout.flush()\n"
        "print('e')"
    )

    await NotebookExecutor(kernel).execute_notebook(nb)

    assert stream_text(nb.cells[0]) == "a\nb\ncd é\ne\n"


@pytest.mark.gateway
async def test_activity_tracking_reports_busy_while_a_cell_runs_and_idle_after(
    client: GatewayClient, kernel: KernelConnection
) -> None:
    await kernel.kernel_info()  # a fresh kernel is "starting" until its first status message
    before = await wait_for_state(client, kernel.kernel_id, "idle")

    msg_id = "activity-probe"
    subscription = kernel.subscribe(msg_id)
    content = {"code": "import time; time.sleep(1.5)", "silent": False, "store_history": True}
    await kernel.send("shell", "execute_request", content, msg_id=msg_id)
    await asyncio.sleep(0.7)
    during = await client.get_kernel(kernel.kernel_id)
    assert during["execution_state"] == "busy"
    assert during["last_activity"] > before["last_activity"]

    while True:
        message = await subscription.get(30)
        assert message is not None
        if message["header"]["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    kernel.unsubscribe(msg_id)
    after = await wait_for_state(client, kernel.kernel_id, "idle")
    assert after["last_activity"] > during["last_activity"]
