"""Kernel messages to nbformat v4 outputs, with byte caps, a truncation marker and a bounded spill.

Caps count UTF-8 bytes of stream text, of every mime value of rich outputs (base64 for images), of
display updates (what an update adds to every output showing that display), and of errors (ename,
evalue and traceback). Once a cell passes its cap, or the notebook passes its cap, the cell's further
outputs are dropped from the notebook and a stderr stream marker says how much was dropped and where
it went. Errors stay visible past the cap in a short form (ERROR_SUMMARY_BYTES each, at most
ERROR_ALLOWANCE per cell, counted too). Every output of a truncated cell, from its first one, is
written to the spill as JSON lines `{"index": i, "cell_id": id, "output": {...}}` (a display update
that did not fit also carries `"update_display_id"`), so nothing is lost silently; the spill has its
own cap, past which even the spill drops (and says so in the marker).

A message larger than the websocket's limit (message_limit: the cell cap plus headroom) never reaches
the engine: the connection reports it and the cell's marker says so (it is not in the spill either).

Every output is checked against nbformat's output schema as it arrives (check_bundle and friends: cheap
type checks, no schema validator); an invalid one is replaced by a stderr marker saying what was
dropped, so the cell's outputs always validate.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import nbformat

from nbkube.engine.protocol import Message

Output = dict[str, Any]

TRACEBACK_CAP = 64 * 1024
MARKER_KEY = "nbkube_truncated"
ERROR_SUMMARY_BYTES = 8 * 1024
"""An error kept past the cap: its ename, evalue and traceback tail cut to about this many bytes."""
ERROR_ALLOWANCE = 64 * 1024
"""What the short errors kept past a cell's cap may add to it, in all."""
MESSAGE_HEADROOM = 1024 * 1024
"""What a websocket message may carry beyond a cell's cap: its envelope and JSON escaping."""


@dataclass(frozen=True)
class OutputLimits:
    cell_bytes: int = 4 * 1024 * 1024
    notebook_bytes: int = 32 * 1024 * 1024
    spill_bytes: int = 1024 * 1024 * 1024
    spill_dir: str | os.PathLike[str] | None = None
    """Where the spill file goes; a fresh temporary directory when None."""


def message_limit(limits: OutputLimits | None = None) -> int:
    """The websocket's max message size for these caps (GatewayClient's max_msg_size): the cell cap, a
    quarter more for JSON escaping, and MESSAGE_HEADROOM. An output that fits the cap always fits a
    message; a larger message is refused by the websocket before it is buffered."""
    cell = (limits or OutputLimits()).cell_bytes
    return cell + cell // 4 + MESSAGE_HEADROOM


def text_bytes(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _value_bytes(value: Any) -> int:
    if type(value) is str:
        return text_bytes(value)
    if isinstance(value, list) and all(type(v) is str for v in value):
        return sum(map(text_bytes, value))
    return text_bytes(json.dumps(value))


def bundle_bytes(data: dict[str, Any]) -> int:
    return sum(_value_bytes(value) for value in data.values())


def output_bytes(output: Output) -> int:
    kind = output["output_type"]
    if kind == "stream":
        return _value_bytes(output["text"])
    if kind == "error":
        return (
            text_bytes(output["ename"])
            + text_bytes(output["evalue"])
            + sum(text_bytes(line) for line in output["traceback"])
        )
    return bundle_bytes(output.get("data", {}))


def cap_traceback(lines: list[str], cap: int = TRACEBACK_CAP) -> list[str]:
    kept: list[str] = []
    size = 0
    for line in reversed(lines):  # the last lines say what went wrong
        size += text_bytes(line)
        if size > cap:
            kept.append("[nbkube: traceback truncated]")
            break
        kept.append(line)
    return kept[::-1]


def cut_text(text: str, cap: int) -> str:
    """text cut to at most about `cap` bytes, saying so."""
    if text_bytes(text) <= cap:
        return text
    head = text.encode("utf-8")[:cap].decode("utf-8", "ignore")
    return f"{head}… [nbkube: cut, {text_bytes(text)} bytes in all]"


def summarize_error(output: Output) -> Output:
    """The short form of an error kept past the cap (at most about ERROR_SUMMARY_BYTES)."""
    quarter = ERROR_SUMMARY_BYTES // 4
    return nbformat.from_dict(
        {
            "output_type": "error",
            "ename": cut_text(output["ename"], 256),
            "evalue": cut_text(output["evalue"], quarter),
            "traceback": cap_traceback(output["traceback"], ERROR_SUMMARY_BYTES - quarter - 512),
        }
    )


# -- the output schema, checked as outputs arrive -----------------------------------------------------


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def is_json_mime(mime: str) -> bool:
    """The mime types whose value may be any JSON (nbformat: ^application/(.*\\+)?json$)."""
    return mime.startswith("application/") and (mime == "application/json" or mime.endswith("+json"))


def _is_multiline(value: Any) -> bool:
    return type(value) is str or (isinstance(value, list) and all(type(v) is str for v in value))


def check_bundle(data: Any) -> str | None:
    """None when `data` is a valid mime bundle, else what is wrong with it."""
    if not isinstance(data, dict):
        return f"data is {_kind(data)}, not an object"
    for mime, value in data.items():
        if type(value) is str or is_json_mime(mime) or _is_multiline(value):
            continue
        return f"data[{mime!r}] is {_kind(value)}, not a string or a list of strings"
    return None


def _metadata(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, list):
        return "".join(map(str, value))
    return "" if value is None else str(value)


def build_output(msg_type: str, content: dict[str, Any]) -> tuple[Output | None, str | None]:
    """The nbformat output of an iopub message (None for other message types), and what was wrong
    with it when it cannot be one (then the output is None). Errors are coerced, not dropped: a
    non-string ename or evalue becomes its str(), traceback lines likewise."""
    if msg_type == "stream":
        name, text = content.get("name"), content.get("text")
        if type(name) is not str:
            return None, f"stream name is {_kind(name)}, not a string"
        if type(text) is not str:
            if not _is_multiline(text):
                return None, f"stream text is {_kind(text)}, not a string"
            text = "".join(text)  # type: ignore[arg-type]  # (_is_multiline: a list of strings)
        return {"output_type": "stream", "name": name, "text": text}, None
    if msg_type in ("display_data", "execute_result"):
        data = content.get("data", {})
        problem = check_bundle(data)
        if problem is not None:
            return None, problem
        output: Output = {
            "output_type": msg_type,
            "data": data,
            "metadata": _metadata(content.get("metadata")),
        }
        if msg_type == "execute_result":
            count = content.get("execution_count")
            output["execution_count"] = count if type(count) is int and count >= 0 else None
        return output, None
    if msg_type == "error":
        traceback = content.get("traceback") or []
        if not isinstance(traceback, list):
            traceback = [traceback]
        return {
            "output_type": "error",
            "ename": _strings(content.get("ename", "")),
            "evalue": _strings(content.get("evalue", "")),
            "traceback": cap_traceback([line if type(line) is str else str(line) for line in traceback]),
        }, None
    return None, None


def invalid_marker(msg_type: str, problem: str) -> Output:
    text = f"[nbkube: dropped an invalid {msg_type} output from the kernel: {problem}]\n"
    return nbformat.from_dict({"output_type": "stream", "name": "stderr", "text": text})


class Spill:
    """An append-only JSON-lines file of full outputs, capped at `limit` bytes. Writes go through a
    thread in chunks so the event loop never blocks on disk.

    The file is `<directory>/outputs.spill.jsonl`, created (emptied) on the first flush. An execution
    that starts later in the notebook (an operator restarted mid-run, reattached to the kernel) calls
    `start` first to keep what the dead operator spilled for the cells it does not run again."""

    CHUNK = 1024 * 1024
    FILE_NAME = "outputs.spill.jsonl"

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

    async def start(self, first_index: int) -> None:
        """The spill of an execution that starts at cell `first_index`: of a spill file already in
        `directory` (an earlier execution of this notebook), the lines of the cells before `first_index`
        stay, count against the cap, and the next writes append after them; the lines of later cells
        (the cell being resumed spills again from the outputs it starts with) and a line torn by a
        crash go. With `first_index` 0, or nothing to keep, the earlier file goes and the spill starts
        empty. Only before the first write; without a directory there is nothing to keep."""
        if self.directory is None or self.path is not None or self._buffer:
            return
        path = Path(self.directory) / self.FILE_NAME
        kept = await asyncio.to_thread(_keep_lines_before, path, first_index)
        if kept:
            self.path, self.written = path, kept

    async def write(self, index: int, cell_id: str, output: Output, **extra: Any) -> None:
        line = json.dumps({"index": index, "cell_id": cell_id, "output": output, **extra}) + "\n"
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
        path = directory / self.FILE_NAME
        path.write_bytes(b"")
        return path

    def _append(self, data: str) -> None:
        assert self.path is not None
        with self.path.open("a", encoding="utf-8") as f:
            f.write(data)


_SPILL_INDEX = re.compile(rb'^\{"index": (-?\d+),')


def _spill_line_index(line: bytes) -> int | None:
    """The cell index of a spill line (Spill.write puts it first), or None for a line that is not one."""
    match = _SPILL_INDEX.match(line)
    if match:
        return int(match.group(1))
    try:
        index = json.loads(line).get("index")
    except (ValueError, AttributeError):
        return None
    return index if type(index) is int else None


def _keeps(line: bytes, first_index: int) -> bool:
    index = _spill_line_index(line) if line.endswith(b"\n") else None  # (no newline: torn by a crash)
    return index is not None and index < first_index


def _keep_lines_before(path: Path, first_index: int) -> int:
    """Blocking: cut the spill file `path` down to its whole lines of cells before `first_index`, in
    their order; the bytes kept. A file left with nothing is removed. Streams: never holds the file."""
    offset = prefix = kept = 0  # where the line is; the bytes of the leading kept lines; of all kept
    scattered = False  # a kept line comes after one that goes: the file must be rewritten
    try:
        with path.open("rb") as f:
            for line in f:
                if _keeps(line, first_index):
                    kept += len(line)
                    if offset == prefix:  # every line before it stays too
                        prefix += len(line)
                    else:
                        scattered = True
                offset += len(line)
    except FileNotFoundError:
        return 0
    if not kept:
        path.unlink(missing_ok=True)
    elif not scattered:
        os.truncate(path, prefix)
    else:
        partial = path.with_name(f"{path.name}.partial")
        with path.open("rb") as src, partial.open("wb") as dst:
            dst.writelines(line for line in src if _keeps(line, first_index))
        os.replace(partial, path)
    return kept


async def bounded_outputs(outputs: Sequence[dict[str, Any]], limits: OutputLimits) -> list[Output]:
    """Outputs recorded elsewhere (a journal's), rebuilt within the cell cap with the usual marker when
    they exceed it; what does not fit is dropped (said by the marker), not spilled."""
    cell = CellOutputs(NotebookBudget(replace(limits, spill_bytes=0)), 0, "")
    for output in outputs:
        await cell.add(output)
    return await cell.finish()


class NotebookBudget:
    """What the whole notebook has kept so far, shared by its cells."""

    def __init__(self, limits: OutputLimits) -> None:
        self.limits = limits
        self.kept = 0
        self.spill = Spill(limits.spill_dir, limits.spill_bytes)
        # display_id -> (cell, output) showing it, across cells (update_display_data may target any cell).
        self.displays: dict[str, list[tuple[CellOutputs, Output]]] = {}


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
        self.errors_kept_past_cap = 0
        self.invalid = 0
        """Outputs replaced by a marker for not fitting nbformat's schema."""
        self.updates_dropped = 0
        self.lost_messages = 0
        self.lost_bytes = 0
        self.message_limit: int | None = None
        self._clear_pending = False
        self._display_ids: set[str] = set()
        # Stream text accumulates as chunks (joined at finish) so merging stays linear.
        self._stream_chunks: dict[int, list[str]] = {}

    @property
    def incomplete(self) -> bool:
        """Whether something of the cell's output is not in the notebook (the marker says what)."""
        return self.truncated or bool(self.updates_dropped or self.lost_messages)

    def _remaining(self) -> int:
        limits = self.budget.limits
        return min(limits.cell_bytes - self.kept, limits.notebook_bytes - self.budget.kept)

    def _account(self, size: int) -> None:
        self.kept += size
        self.budget.kept += size

    async def _start_truncation(self) -> None:
        if self.truncated:
            return
        self.truncated = True
        for output in self.outputs:
            await self.budget.spill.write(self.index, self.cell_id, self._materialize(output))

    def _materialize(self, output: Output) -> Output:
        chunks = self._stream_chunks.get(id(output))
        if chunks is not None:
            return {**output, "text": "".join(chunks)}
        return output

    def _clear(self) -> None:
        if self._display_ids:
            displays = self.budget.displays
            for display_id in self._display_ids:
                shown = [entry for entry in displays.get(display_id, ()) if entry[0] is not self]
                if shown:
                    displays[display_id] = shown
                else:
                    displays.pop(display_id, None)
            self._display_ids.clear()
        self.outputs.clear()
        self._stream_chunks.clear()
        self.budget.kept -= self.kept
        self.kept = 0

    async def message_lost(self, size: int | None, limit: int | None) -> None:
        """A message of this cell was larger than the websocket's limit: the connection refused it
        unread (and reconnected). Counted and marked (it is not in the spill); the cell's later outputs
        are kept as usual."""
        self.lost_messages += 1
        self.lost_bytes += size or 0
        self.total += size or 0
        self.message_limit = limit

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
            return await self._update(content)
        built, problem = build_output(msg_type, content)
        if built is None:
            if problem is None:
                return None
            self.invalid += 1
            built = invalid_marker(msg_type, problem)
        output = nbformat.from_dict(built)
        if self._clear_pending:
            self._clear_pending = False
            self._clear()
        transient = content.get("transient")
        display_id = transient.get("display_id") if problem is None and isinstance(transient, dict) else None
        await self._add(output, display_id if isinstance(display_id, str) else None)
        return output

    async def add(self, output: dict[str, Any]) -> None:
        """An output recorded earlier (a journal's), counted and kept as if it had just arrived."""
        await self._add(nbformat.from_dict(output), None)

    async def _update(self, content: dict[str, Any]) -> Output | None:
        """update_display_data: every output showing the display takes the new data, if what that adds
        fits the cap of its cell and the notebook's; otherwise it keeps its old data, the update goes to
        the spill and this cell's marker says so (its later outputs are kept as usual)."""
        transient = content.get("transient")
        display_id = transient.get("display_id") if isinstance(transient, dict) else None
        data = content.get("data", {})
        problem = check_bundle(data)
        if problem is not None:
            self.invalid += 1
            marker = invalid_marker("update_display_data", problem)
            await self._add(marker, None)
            return marker
        shown = self.budget.displays.get(display_id) if isinstance(display_id, str) else None
        if not shown:
            return None
        metadata = _metadata(content.get("metadata"))
        size = bundle_bytes(data)
        limits = self.budget.limits
        dropped = False
        for owner, output in shown:
            self.total += size
            added = size - bundle_bytes(output["data"])
            if added > 0 and (
                owner.kept + added > limits.cell_bytes or self.budget.kept + added > limits.notebook_bytes
            ):
                dropped = True
                continue
            output["data"] = data
            output["metadata"] = metadata
            owner._account(added)
        if dropped:
            self.updates_dropped += 1
            update: Output = {"output_type": "display_data", "data": data, "metadata": metadata}
            await self.budget.spill.write(self.index, self.cell_id, update, update_display_id=display_id)
        return None

    async def _add(self, output: Output, display_id: str | None) -> None:
        size = output_bytes(output)
        self.total += size
        if self.truncated:
            await self.budget.spill.write(self.index, self.cell_id, output)
            if output["output_type"] == "error":
                self._keep_error(output)
            return
        remaining = self._remaining()
        if size <= remaining:
            self._append(output, size)
            if display_id:
                self.budget.displays.setdefault(display_id, []).append((self, output))
                self._display_ids.add(display_id)
            return
        await self._start_truncation()
        await self.budget.spill.write(self.index, self.cell_id, output)
        if output["output_type"] == "stream" and remaining > 0:
            head = output["text"].encode("utf-8")[:remaining].decode("utf-8", "ignore")
            self._append(nbformat.from_dict({**output, "text": head}), text_bytes(head))
        elif output["output_type"] == "error":
            self._keep_error(output)

    def _keep_error(self, output: Output) -> None:
        """An error past the cap stays visible in short form, within ERROR_ALLOWANCE for the cell."""
        short = summarize_error(output)
        size = output_bytes(short)
        if self.errors_kept_past_cap + size > ERROR_ALLOWANCE:
            return
        self.errors_kept_past_cap += size
        self._append(short, size)

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
        if self.incomplete:
            spill = self.budget.spill
            await spill.flush()
            limits = self.budget.limits
            where = f"spill file {spill.path.name}" if spill.path else "spill"
            lost = (
                f"; the spill is full (cap {limits.spill_bytes} bytes), {spill.dropped} bytes dropped"
                if spill.dropped
                else ""
            )
            updates = (
                f" {self.updates_dropped} display update(s) did not fit and were not applied "
                f"(they are in the {where})."
                if self.updates_dropped
                else ""
            )
            refused = (
                f" {self.lost_messages} message(s) of {self.lost_bytes} bytes in all exceeded the "
                f"websocket's limit of {self.message_limit} bytes: refused unread (not in the spill); "
                "the connection was reset, and what the gateway sent right after may be lost too."
                if self.lost_messages
                else ""
            )
            rest = f" The full output is in the {where}{lost}." if self.truncated else ""
            text = (
                f"[nbkube: output truncated: this cell produced {self.total} bytes of output, "
                f"{self.kept} kept here (cell cap {limits.cell_bytes}, "
                f"notebook cap {limits.notebook_bytes}).{updates}{refused}{rest}]\n"
            )
            self.marker = nbformat.from_dict({"output_type": "stream", "name": "stderr", "text": text})
            self.outputs.append(self.marker)
        return self.outputs
