"""Helpers for the tests of a run's input files and env (test_run_inputs.py)."""

from __future__ import annotations

import asyncio
import base64
import copy
import socket
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbkube.engine import GatewayClient, NotebookExecutor
from nbkube_testenv.nodeagent.addresses import OUTSIDE_IP


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG image of one colour."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def config_map(name: str, data: dict[str, str] | None = None, binary: dict[str, bytes] | None = None) -> dict:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    if data:
        body["data"] = data
    if binary:
        body["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    return body


def secret(name: str, data: dict[str, bytes]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def python_notebook(*sources: str) -> NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source, id=f"c{i}") for i, source in enumerate(sources)]
    return nb


def comparable_outputs(nb: NotebookNode) -> list[tuple[int | None, list[dict[str, Any]]]]:
    """Each code cell's execution count and outputs, without what differs from one execution to the next
    (timing metadata, nbkube's own metadata)."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in copy.deepcopy(cell.outputs):
            output = dict(output)
            output.pop("transient", None)
            outputs.append(output)
        out.append((cell.execution_count, outputs))
    return out


def all_git_objects(clone: Path) -> bytes:
    """Every object of a clone, decompressed (a grep of .git's files would miss compressed content)."""
    done = subprocess.run(
        ["git", "-C", str(clone), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout


class Gate:
    """A cell that waits until the test opens the gate: it connects to a socket of the test and waits for
    a byte (pods are local processes sharing the host's network, not always its /tmp: the node agent
    mounts a pod's own /tmp when the cluster's directory is elsewhere)."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind((OUTSIDE_IP, 0))
        self._server.listen(4)
        self.port = self._server.getsockname()[1]

    @property
    def cell(self) -> str:
        return f"import socket\nsocket.create_connection(({OUTSIDE_IP!r}, {self.port})).recv(1)"

    def open(self, timeout: float = 60) -> None:
        """Lets the waiting cell go on (it has connected by now, or connects and finds the byte)."""
        self._server.settimeout(timeout)
        connection, _ = self._server.accept()
        connection.sendall(b"g")
        connection.close()

    def close(self) -> None:
        self._server.close()


def exists_in_pod(url: str, token: str, path: str) -> bool:
    """Whether `path` exists as a fresh kernel on that gateway pod sees it (its own /tmp, maybe)."""

    async def check() -> bool:
        async with GatewayClient(url, token) as client:
            kernel_id = str((await client.start_kernel("python3"))["id"])
            try:
                connection = await client.connect(kernel_id)
                nb = python_notebook(f"import os\nprint(os.path.exists({path!r}))")
                await NotebookExecutor(connection).execute_notebook(nb)
                await connection.close()
                text = "".join(o.get("text", "") for o in nb.cells[0].outputs)
                assert text in ("True\n", "False\n"), nb.cells[0].outputs
                return text == "True\n"
            finally:
                await client.delete_kernel(kernel_id)

    return asyncio.run(check())
