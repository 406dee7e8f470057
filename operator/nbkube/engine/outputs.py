"""Kernel messages to nbformat v4 outputs, with byte caps, a truncation marker and a bounded spill.

Caps count UTF-8 bytes of stream text and of every mime value of rich outputs (base64 for images).
Once a cell passes its cap, or the notebook passes its cap, the cell's further outputs are dropped from
the notebook (error outputs excepted: they are kept, their traceback capped) and a stderr stream marker
says how much was dropped and where it went. Every output of a truncated cell, from its first one, is
written to the spill as JSON lines `{"index": i, "cell_id": id, "output": {...}}`, so nothing is lost
silently; the spill has its own cap, past which even the spill drops (and says so in the marker).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from nbkube.engine.protocol import Message

Output = dict[str, Any]

TRACEBACK_CAP = 64 * 1024
MARKER_KEY = "nbkube_truncated"


@dataclass(frozen=True)
class OutputLimits:
    cell_bytes: int = 4 * 1024 * 1024
    notebook_bytes: int = 32 * 1024 * 1024
    spill_bytes: int = 1024 * 1024 * 1024
    spill_dir: str | os.PathLike[str] | None = None
    """Where the spill file goes; a fresh temporary directory when None."""


def text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def output_bytes(output: Output) -> int:
    kind = output["output_type"]
    if kind == "stream":
        text = output["text"]
        return sum(map(text_bytes, text)) if isinstance(text, list) else text_bytes(text)
    if kind == "error":
        return sum(text_bytes(line) for line in output.get("traceback", ())) + text_bytes(
            output.get("evalue", "")
        )
    total = 0
    for value in output.get("data", {}).values():
        total += text_bytes(value) if isinstance(value, str) else text_bytes(json.dumps(value))
    return total


def cap_traceback(lines: list[str]) -> list[str]:
    kept: list[str] = []
    size = 0
    for line in reversed(lines):  # the last lines say what went wrong
        size += text_bytes(line)
        if size > TRACEBACK_CAP:
            kept.append("[nbkube: traceback truncated]")
            break
        kept.append(line)
    return kept[::-1]


class Spill:
    """An append-only JSON-lines file of full outputs, capped at `limit` bytes. Writes go through a
    thread in chunks so the event loop never blocks on disk."""

    CHUNK = 1024 * 1024

    def __init__(self, directory: str | os.PathLike[str] | None, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.path: Path | None = None
        self.written = 0
        self.dropped = 0
        self._buffer: list[str] = []
        self._buffered = 0

    @property
    def full(self) -> bool:
        return self.written + self._buffered >= self.limit

    async def write(self, index: int, cell_id: str, output: Output) -> None:
        line = json.dumps({"index": index, "cell_id": cell_id, "output": output}) + "\n"
        size = text_bytes(line)
        if self.written + self._buffered + size > self.limit:
            self.dropped += size
            return
        self._buffer.append(line)
        self._buffered += size
        if self._buffered >= self.CHUNK:
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        data, self._buffer = "".join(self._buffer), []
        if self.path is None:
            self.path = await asyncio.to_thread(self._create)
        await asyncio.to_thread(self._append, data)
        self.written += self._buffered
        self._buffered = 0

    def _create(self) -> Path:
        directory = Path(self.directory) if self.directory else Path(tempfile.mkdtemp(prefix="nbkube-spill-"))
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "outputs.spill.jsonl"
        path.write_bytes(b"")
        return path

    def _append(self, data: str) -> None:
        assert self.path is not None
        with self.path.open("a", encoding="utf-8") as f:
            f.write(data)


class NotebookBudget:
    """What the whole notebook has kept so far, shared by its cells."""

    def __init__(self, limits: OutputLimits) -> None:
        self.limits = limits
        self.kept = 0
        self.spill = Spill(limits.spill_dir, limits.spill_bytes)
        # display_id -> outputs showing it, across cells (update_display_data may target any cell).
        self.displays: dict[str, list[Output]] = {}


class CellOutputs:
    """Builds one cell's outputs from its iopub messages."""

    def __init__(self, budget: NotebookBudget, index: int, cell_id: str) -> None:
        self.budget = budget
        self.index = index
        self.cell_id = cell_id
        self.outputs: list[Output] = []
        self.kept = 0
        self.total = 0
        self.truncated = False
        self.marker: Output | None = None
        self._clear_pending = False
        # Stream text accumulates as chunks (joined at finish) so merging stays linear.
        self._stream_chunks: dict[int, list[str]] = {}

    def _remaining(self) -> int:
        limits = self.budget.limits
        return min(limits.cell_bytes - self.kept, limits.notebook_bytes - self.budget.kept)

    def _account(self, size: int) -> None:
        self.kept += size
        self.budget.kept += size

    async def _start_truncation(self) -> None:
        self.truncated = True
        for output in self.outputs:
            await self.budget.spill.write(self.index, self.cell_id, self._materialize(output))

    def _materialize(self, output: Output) -> Output:
        chunks = self._stream_chunks.get(id(output))
        if chunks is not None:
            return {**output, "text": "".join(chunks)}
        return output

    def _clear(self) -> None:
        self.outputs.clear()
        self._stream_chunks.clear()
        self.budget.kept -= self.kept
        self.kept = 0

    async def handle(self, message: Message) -> Output | None:
        """Apply one iopub message; returns the new output (a stream chunk for streams) or None."""
        msg_type = message["header"]["msg_type"]
        content = message["content"]
        if msg_type == "clear_output":
            if content.get("wait"):
                self._clear_pending = True
            else:
                self._clear()
            return None
        if msg_type == "update_display_data":
            display_id = content.get("transient", {}).get("display_id")
            for output in self.budget.displays.get(display_id, ()):
                output["data"] = content.get("data", {})
                output["metadata"] = content.get("metadata", {})
            return None
        if msg_type == "stream":
            output: Output = {"output_type": "stream", "name": content["name"], "text": content["text"]}
        elif msg_type in ("display_data", "execute_result"):
            output = {
                "output_type": msg_type,
                "data": content.get("data", {}),
                "metadata": content.get("metadata", {}),
            }
            if msg_type == "execute_result":
                output["execution_count"] = content.get("execution_count")
        elif msg_type == "error":
            output = {
                "output_type": "error",
                "ename": content.get("ename", ""),
                "evalue": content.get("evalue", ""),
                "traceback": cap_traceback(content.get("traceback", [])),
            }
        else:
            return None
        output = nbformat.from_dict(output)
        if self._clear_pending:
            self._clear_pending = False
            self._clear()
        await self._add(output, transient=content.get("transient") or {})
        return output

    async def _add(self, output: Output, transient: dict[str, Any]) -> None:
        size = output_bytes(output)
        self.total += size
        if self.truncated:
            await self.budget.spill.write(self.index, self.cell_id, output)
            if output["output_type"] == "error":
                self._append(output, size)
            return
        remaining = self._remaining()
        if size <= remaining or output["output_type"] == "error":
            self._append(output, size)
            display_id = transient.get("display_id")
            if display_id:
                self.budget.displays.setdefault(display_id, []).append(output)
            return
        await self._start_truncation()
        await self.budget.spill.write(self.index, self.cell_id, output)
        if output["output_type"] == "stream" and remaining > 0:
            head = output["text"].encode("utf-8")[:remaining].decode("utf-8", "ignore")
            self._append(nbformat.from_dict({**output, "text": head}), text_bytes(head))

    def _append(self, output: Output, size: int) -> None:
        self._account(size)
        last = self.outputs[-1] if self.outputs else None
        if (
            output["output_type"] == "stream"
            and last is not None
            and last["output_type"] == "stream"
            and last["name"] == output["name"]
        ):
            self._stream_chunks.setdefault(id(last), [last["text"]]).append(output["text"])
            return
        self.outputs.append(output)

    async def finish(self) -> list[Output]:
        """The cell's final outputs (with the truncation marker when output was dropped)."""
        for output in self.outputs:
            chunks = self._stream_chunks.get(id(output))
            if chunks is not None:
                output["text"] = "".join(chunks)
        self._stream_chunks.clear()
        if self.truncated:
            spill = self.budget.spill
            await spill.flush()
            limits = self.budget.limits
            where = f"spill file {spill.path.name}" if spill.path else "the spill"
            lost = (
                f"; the spill is full (cap {limits.spill_bytes} bytes), {spill.dropped} bytes dropped"
                if spill.dropped
                else ""
            )
            text = (
                f"[nbkube: output truncated: this cell produced {self.total} bytes of output, "
                f"{self.kept} kept here (cell cap {limits.cell_bytes}, "
                f"notebook cap {limits.notebook_bytes}). "
                f"The full output is in the {where}{lost}.]\n"
            )
            self.marker = nbformat.from_dict({"output_type": "stream", "name": "stderr", "text": text})
            self.outputs.append(self.marker)
        return self.outputs
