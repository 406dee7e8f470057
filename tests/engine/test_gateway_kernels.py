"""The tuned gateway's kernel managers: batch options for IPython kernels, and cheap activity tracking
that still reports what idle culling needs (execution_state and last_activity)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from jupyter_client.kernelspec import KernelSpec
from nbkube.engine import KernelConnection
from nbkube.engine.client import GatewayClient
from nbkube.gateway.kernels import IPYKERNEL_BATCH_ARGUMENTS, BatchKernelManager, runs_ipykernel

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
    ipython = manager_for([sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert ipython.format_kernel_cmd()[-len(IPYKERNEL_BATCH_ARGUMENTS) :] == list(IPYKERNEL_BATCH_ARGUMENTS)
    # an option the caller already passes is not repeated
    cmd = ipython.format_kernel_cmd(extra_arguments=[IPYKERNEL_BATCH_ARGUMENTS[0]])
    assert cmd.count(IPYKERNEL_BATCH_ARGUMENTS[0]) == 1

    other = manager_for(["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"])
    assert not set(IPYKERNEL_BATCH_ARGUMENTS) & set(other.format_kernel_cmd())

    opted_out = manager_for([sys.executable, "-m", "ipykernel_launcher"], ipykernel_arguments=[])
    assert opted_out.format_kernel_cmd()[-2:] == ["-m", "ipykernel_launcher"]


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


async def wait_for_state(client: GatewayClient, kernel_id: str, state: str) -> dict[str, str]:
    """The kernel model once the gateway reports `state` (its watcher reads iopub on its own socket)."""
    for _ in range(50):
        model = await client.get_kernel(kernel_id)
        if model["execution_state"] == state:
            return dict(model)
        await asyncio.sleep(0.1)
    raise AssertionError(f"kernel {kernel_id} stayed {model['execution_state']}, expected {state}")


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
