"""A run's cell outputs as they stream (`nbkube logs`), served as `notebookruns/<run>/log`.

The answer is newline-delimited JSON, one event per line:
    {"event": "cellStarted", "index": 3}
    {"event": "output", "index": 3, "output": {...nbformat output...}}
    {"event": "cellFinished", "index": 3, "state": "succeeded", "executionCount": 4}
    {"event": "end", "state": "Succeeded", "reason": "Succeeded"}        (only once the run has ended)
While the run is active the events come from its journal on the results volume; once it has ended,
from the executed notebook in the namespace's results repository.

Memory stays bounded whatever the size of the result: the journal is read a batch of lines at a time
and the stored notebook is parsed cell by cell as git streams it (ijson), never loaded whole. A journal
line that does not parse (a crash tore it mid-write) is skipped.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import ijson
import nbformat
from nbformat.v4.rwbase import rejoin_lines

from nbkube.api.states import TERMINAL_RUN_STATES, CellState

POLL_SECONDS = 0.2
STATUS_EVERY_SECONDS = 1.0
BATCH_BYTES = 1024 * 1024

# (namespace, name) -> the NotebookRun, or None when there is none.
RunReader = Callable[[str, str], Awaitable[dict[str, Any] | None]]


def _events_from_journal_entry(entry: dict[str, Any]) -> list[dict[str, Any]]:
    index = entry["index"]
    if "msgId" in entry:
        return [{"event": "cellStarted", "index": index}]
    if "output" in entry:
        return [{"event": "output", "index": index, "output": entry["output"]}]
    if "cell" in entry:
        cell = entry["cell"]
        state = cell.get("metadata", {}).get("nbkube", {}).get("state", CellState.SUCCEEDED.value)
        return [
            {
                "event": "cellFinished",
                "index": index,
                "state": state,
                "executionCount": cell.get("execution_count"),
            }
        ]
    return []


def _events_from_cell(index: int, cell: dict[str, Any]) -> list[dict[str, Any]]:
    if cell.get("cell_type") != "code":
        return []
    state = (cell.get("metadata") or {}).get("nbkube", {}).get("state")
    if state is None and cell.get("execution_count") is None:
        return []
    return [
        {"event": "cellStarted", "index": index},
        *({"event": "output", "index": index, "output": dict(o)} for o in cell.get("outputs", [])),
        {
            "event": "cellFinished",
            "index": index,
            "state": state or CellState.SUCCEEDED.value,
            "executionCount": cell.get("execution_count"),
        },
    ]


async def _tail(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Whole lines from `offset`, about BATCH_BYTES of them (at least one line), and the new offset."""

    def read() -> tuple[list[bytes], int]:
        lines: list[bytes] = []
        size, pos = 0, offset
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                while size < BATCH_BYTES:
                    line = fh.readline()
                    if not line.endswith(b"\n"):  # nothing more, or a line still being written
                        break
                    lines.append(line)
                    size += len(line)
                    pos += len(line)
        except FileNotFoundError:
            pass
        return lines, pos

    lines, new_offset = await asyncio.to_thread(read)
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # torn by a crash mid-write; the next operator wrote on after it
        if isinstance(entry, dict) and "index" in entry:
            entries.append(entry)
    return entries, new_offset


async def _notebook_events(store: Any, blob: str) -> AsyncIterator[dict[str, Any]]:
    """The events of a stored notebook, parsed cell by cell as git streams it (ijson)."""
    async with store.open_blob(blob) as stream:
        index = 0
        async for cell in ijson.items(stream, "cells.item", use_float=True):
            # The file keeps multi-line strings as lists of lines (nbformat's split_lines): join them back.
            (cell,) = rejoin_lines(nbformat.from_dict({"cells": [cell]})).cells
            for event in _events_from_cell(index, cell):
                yield event
            index += 1


async def stream_events(
    read_run: RunReader, results: Any, journal_dir: Path, namespace: str, name: str, follow: bool
) -> AsyncGenerator[dict[str, Any], None]:
    offset = 0
    attempt_seen: int | None = None
    run: dict[str, Any] | None = None
    checked = 0.0
    loop = asyncio.get_running_loop()
    while True:
        if run is None or loop.time() - checked >= STATUS_EVERY_SECONDS:
            run = await read_run(namespace, name)
            checked = loop.time()
            if run is None:
                yield {"event": "end", "state": None, "reason": "NotFound"}
                return
        status = run.get("status") or {}
        journal = journal_dir / f"{run['metadata']['uid']}.jsonl"
        if status.get("state") in TERMINAL_RUN_STATES:
            if offset > 0:  # we were following the journal: its last lines first
                while True:
                    entries, new_offset = await _tail(journal, offset)
                    for entry in entries:
                        for event in _events_from_journal_entry(entry):
                            yield event
                    if new_offset == offset:
                        break
                    offset = new_offset
            elif status.get("result") and results is not None:
                async for event in _result_events(results, namespace, status["result"]):
                    yield event
            yield {"event": "end", "state": status.get("state"), "reason": status.get("reason")}
            return
        entries, new_offset = await _tail(journal, offset)
        for entry in entries:
            if attempt_seen is not None and entry.get("attempt") != attempt_seen:
                yield {"event": "retry", "attempt": entry.get("attempt")}
            attempt_seen = entry.get("attempt")
            for event in _events_from_journal_entry(entry):
                yield event
        caught_up = new_offset == offset
        offset = new_offset
        if caught_up:
            if not follow:
                return
            await asyncio.sleep(POLL_SECONDS)


async def _result_events(
    results: Any, namespace: str, result: dict[str, Any]
) -> AsyncIterator[dict[str, Any]]:
    store = await results.repository(namespace)
    if store is None:
        return
    try:
        stat = await store.stat_file(str(result.get("path", "")), str(result.get("commit", "")))
    except ValueError:
        return
    if stat is None:
        return
    async for event in _notebook_events(store, stat[0]):
        yield event
