"""Helpers for the tests of a run's input files and env (test_run_inputs.py)."""

from __future__ import annotations

import base64
import copy
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode


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
