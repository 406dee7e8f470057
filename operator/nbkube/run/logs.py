"""`GET /logs/{namespace}/{name}[?follow=true]`: a run's cell outputs as they stream (`nbkube logs`).

The answer is newline-delimited JSON, one event per line:
    {"event": "cellStarted", "index": 3}
    {"event": "output", "index": 3, "output": {...nbformat output...}}
    {"event": "cellFinished", "index": 3, "state": "succeeded", "executionCount": 4}
    {"event": "end", "state": "Succeeded", "reason": "Succeeded"}        (only once the run has ended)
While the run is active the events come from its journal on the results volume; once it has ended,
from the executed notebook in the results repository.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nbformat
from aiohttp import web

from nbkube.kube import Kube, NotFound
from nbkube.run.driver import TERMINAL, run_path

POLL_SECONDS = 0.2


def _events_from_journal_entry(entry: dict[str, Any]) -> list[dict[str, Any]]:
    index = entry["index"]
    if "msgId" in entry:
        return [{"event": "cellStarted", "index": index}]
    if "output" in entry:
        return [{"event": "output", "index": index, "output": entry["output"]}]
    if "cell" in entry:
        cell = entry["cell"]
        state = cell.get("metadata", {}).get("nbkube", {}).get("state", "succeeded")
        return [
            {
                "event": "cellFinished",
                "index": index,
                "state": state,
                "executionCount": cell.get("execution_count"),
            }
        ]
    return []


def _events_from_notebook(nb: nbformat.NotebookNode) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        state = cell.get("metadata", {}).get("nbkube", {}).get("state")
        if state is None and cell.get("execution_count") is None:
            continue
        events.append({"event": "cellStarted", "index": index})
        events += [{"event": "output", "index": index, "output": dict(o)} for o in cell.get("outputs", [])]
        events.append(
            {
                "event": "cellFinished",
                "index": index,
                "state": state or "succeeded",
                "executionCount": cell.get("execution_count"),
            }
        )
    return events


async def _tail(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    def read() -> tuple[bytes, int]:
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return b"", offset
        whole = data[: data.rfind(b"\n") + 1]  # never hand out a line still being written
        return whole, offset + len(whole)

    data, new_offset = await asyncio.to_thread(read)
    entries = [json.loads(line) for line in data.splitlines() if line.strip()]
    return entries, new_offset


async def stream_events(
    kube: Kube, results: Any, journal_dir: Path, namespace: str, name: str, follow: bool
) -> AsyncIterator[dict[str, Any]]:
    offset = 0
    attempt_seen: int | None = None
    while True:
        run = await kube.get(run_path(namespace, name))
        status = run.get("status") or {}
        if status.get("state") in TERMINAL:
            if offset > 0:  # we were following the journal: its last lines first
                entries, offset = await _tail(journal_dir / f"{run['metadata']['uid']}.jsonl", offset)
                for entry in entries:
                    for event in _events_from_journal_entry(entry):
                        yield event
            elif status.get("result") and results is not None:
                raw = await results.read_file(namespace, status["result"]["path"], status["result"]["commit"])
                nb = await asyncio.to_thread(nbformat.reads, raw.decode(), as_version=4)
                for event in _events_from_notebook(nb):
                    yield event
            yield {"event": "end", "state": status.get("state"), "reason": status.get("reason")}
            return
        entries, offset = await _tail(journal_dir / f"{run['metadata']['uid']}.jsonl", offset)
        for entry in entries:
            if attempt_seen is not None and entry.get("attempt") != attempt_seen:
                yield {"event": "retry", "attempt": entry.get("attempt")}
            attempt_seen = entry.get("attempt")
            for event in _events_from_journal_entry(entry):
                yield event
        if not follow:
            return
        await asyncio.sleep(POLL_SECONDS)


def logs_routes(kube: Kube, results: Any, journal_dir: Path) -> list[web.RouteDef]:
    async def handler(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        follow = request.query.get("follow", "false").lower() in ("1", "true", "yes")
        try:
            await kube.get(run_path(namespace, name))
        except NotFound:
            raise web.HTTPNotFound(text=f"NotebookRun {namespace}/{name} not found\n") from None
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        async for event in stream_events(kube, results, journal_dir, namespace, name, follow):
            await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
        await response.write_eof()
        return response

    return [web.get("/logs/{namespace}/{name}", handler)]
