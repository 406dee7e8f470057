"""A run's journal: every finished cell, appended as it finishes, on the results volume.

Status holds only summaries; the journal holds the executed cells themselves so that an operator
restarted mid-run can rebuild the notebook's earlier outputs and continue with the next cell instead
of executing anything twice. It is removed once the run's result is committed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


class RunJournal:
    def __init__(self, directory: Path, uid: str) -> None:
        self.path = directory / f"{uid}.jsonl"

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            # No fsync: what we guard against is the operator process dying, and a written line
            # survives that in the page cache; a per-cell fsync would double the cost of small cells.
            fh.write(line)

    async def started(self, attempt: int, index: int, msg_id: str) -> None:
        """Written before the execute request is sent, so a restarted operator knows what is in flight."""
        entry = {"attempt": attempt, "index": index, "msgId": msg_id}
        await asyncio.to_thread(self._append, json.dumps(entry, separators=(",", ":")) + "\n")

    async def record(self, attempt: int, index: int, cell: dict[str, Any]) -> None:
        line = json.dumps({"attempt": attempt, "index": index, "cell": cell}, separators=(",", ":")) + "\n"
        await asyncio.to_thread(self._append, line)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a crash mid-write: everything before it is whole
        return entries

    async def progress(self, attempt: int) -> tuple[dict[int, dict[str, Any]], tuple[int, str] | None]:
        """The finished cells of one attempt by index, and the (index, msg_id) in flight, if any."""
        entries = [e for e in await asyncio.to_thread(self._read) if e.get("attempt") == attempt]
        finished = {e["index"]: e["cell"] for e in entries if "cell" in e}
        in_flight = None
        for entry in entries:
            if "msgId" in entry and entry["index"] not in finished:
                in_flight = (entry["index"], entry["msgId"])
        return finished, in_flight

    async def remove(self) -> None:
        await asyncio.to_thread(self.path.unlink, True)
