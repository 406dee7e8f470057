"""Small notebook builders for the engine tests."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import pytest
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from nbkube.engine import GatewayClient, KernelConnection
from nbkube.gateway.local import LocalGateway


def start_gateway(tmp_path_factory: pytest.TempPathFactory, *args: str, tuned: bool = True) -> LocalGateway:
    """A gateway of the test's own (for tests that kill it); stop() it when done."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    return LocalGateway(secrets.token_hex(16), tuned=tuned, extra_args=args, log_path=log).start()


def notebook(*sources: str, tags: dict[int, list[str]] | None = None) -> NotebookNode:
    """A python3 notebook of code cells ("# md: ..." sources become markdown cells)."""
    cells = []
    for index, source in enumerate(sources):
        if source.startswith("# md:"):
            cells.append(new_markdown_cell(source[5:].strip()))
            continue
        cell = new_code_cell(source)
        if tags and index in tags:
            cell.metadata["tags"] = tags[index]
        cells.append(cell)
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def stream_text(cell: NotebookNode, name: str = "stdout") -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == name)


async def wait_for_state(client: GatewayClient, kernel_id: str, state: str) -> dict[str, str]:
    """The kernel model once the gateway reports `state` (its watcher reads iopub on its own socket)."""
    for _ in range(50):
        model = await client.get_kernel(kernel_id)
        if model["execution_state"] == state:
            return dict(model)
        await asyncio.sleep(0.1)
    raise AssertionError(f"kernel {kernel_id} stayed {model['execution_state']}, expected {state}")


@contextlib.asynccontextmanager
async def fresh_kernel(client: GatewayClient) -> AsyncIterator[KernelConnection]:
    """A fresh kernel on `client` and an open connection to it; deleted afterwards."""
    model = await client.start_kernel("python3")
    connection = await client.connect(model["id"])
    try:
        yield connection
    finally:
        await connection.close()
        await client.delete_kernel(model["id"])
