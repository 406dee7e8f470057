"""The journal of a run's (or a session's) kernel work: every finished cell, appended as it
finishes, on the results volume.

Status holds only summaries; the journal holds the executed cells themselves so that an operator
restarted mid-run can rebuild the notebook's earlier outputs and continue with the next cell instead
of executing anything twice. It is removed once the run's result is committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES_PER_CELL = 4 * 1024 * 1024
_TAIL_CHUNK = 64 * 1024


def cut_torn_tail(path: Path) -> int:
    """Cuts `path` back to its last complete line (one ending in a newline); the bytes removed.

    A writer killed mid-line leaves a line without its newline; whoever appends next must not glue
    its first line to that fragment (both would be lost to every later reader).
    """
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        end = size
        while end > 0:
            start = max(0, end - _TAIL_CHUNK)
            chunk = os.pread(fd, end - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            os.ftruncate(fd, end)
        return size - end
    finally:
        os.close(fd)


class WorkJournal:
    def __init__(self, directory: Path, uid: str) -> None:
        self.path = directory / f"{uid}.jsonl"
        # Full outputs of truncated cells, beside the journal on the results volume (not the
        # operator's /tmp), until they are committed with the result.
        self.spill_dir = directory / f"{uid}.spill"
        self._output_bytes: dict[tuple[int, int], int] = {}
        self._tail_checked = False

    async def open(self) -> None:
        """Makes the journal ready for appending (in a thread): cuts a torn last line a writer killed
        mid-line left behind. Appending calls it too, in line, if nobody did."""
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if self._tail_checked:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut = cut_torn_tail(self.path)
        if cut:
            log.warning("%s: cut a torn last line of %d bytes", self.path, cut)
        self._tail_checked = True

    def _append(self, line: str) -> None:
        self._open()  # the first write of this process: an earlier writer may have died mid-line
        with self.path.open("a", encoding="utf-8") as fh:
            # No fsync: what we guard against is the operator process dying, and a written line
            # survives that in the page cache; a per-cell fsync would double the cost of small cells.
            fh.write(line)

    async def started(self, attempt: int, index: int, msg_id: str) -> None:
        """Written before the execute request is sent, so a restarted operator knows what is in flight."""
        entry = {"attempt": attempt, "index": index, "msgId": msg_id}
        await asyncio.to_thread(self._append, json.dumps(entry, separators=(",", ":")) + "\n")

    async def setup_done(self, attempt: int) -> None:
        """The attempt's kernel holds the run's setup (files, env, working directory): a restarted operator
        reattaching to it does not do it again. Only that it was done is written, never what it held."""
        entry = {"attempt": attempt, "setup": "done"}
        await asyncio.to_thread(self._append, json.dumps(entry, separators=(",", ":")) + "\n")

    def output(self, attempt: int, index: int, output: dict[str, Any], msg_id: str | None = None) -> None:
        """Records one output of a running cell as it arrives.

        Synchronous on purpose: it is one small append to the page cache (microseconds), and doing
        it in line is what guarantees an output the kernel sent is on disk before the next one is
        read; a thread hop per output would cost more than the write. Bounded per cell, because
        the engine truncates a cell's outputs past its own cap anyway.
        """
        key = (attempt, index)
        entry: dict[str, Any] = {"attempt": attempt, "index": index, "output": output}
        if msg_id is not None:
            entry["m"] = msg_id  # the kernel message it came in: not delivered again after a restart
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        used = self._output_bytes.get(key, 0)
        if used + len(line) > MAX_OUTPUT_BYTES_PER_CELL:
            return
        self._output_bytes[key] = used + len(line)
        self._append(line)

    async def record(self, attempt: int, index: int, cell: dict[str, Any]) -> None:
        line = json.dumps({"attempt": attempt, "index": index, "cell": cell}, separators=(",", ":")) + "\n"
        await asyncio.to_thread(self._append, line)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        with self.path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    entry = json.loads(line)
                except ValueError:  # undecodable or torn (a crash mid-write): the lines around it are whole
                    log.warning("%s: line %d is not a journal entry; skipped", self.path, number)
                    continue
                if isinstance(entry, dict) and (isinstance(entry.get("index"), int) or "setup" in entry):
                    entries.append(entry)
                else:
                    log.warning("%s: line %d is not a journal entry; skipped", self.path, number)
        return entries

    async def progress(self, attempt: int) -> JournalProgress:
        """Where one attempt was: its finished cells, and the cell in flight with its outputs so far."""
        entries = [e for e in await asyncio.to_thread(self._read) if e.get("attempt") == attempt]
        setup_done = any("setup" in e for e in entries)
        entries = [e for e in entries if "index" in e]
        finished = {e["index"]: e["cell"] for e in entries if "cell" in e}
        # Started cells without a result, in order. The engine sends a cell's request ahead only after
        # the cell before it replied ok, so there are at most two, and then the first one has replied.
        unfinished: list[tuple[int, str]] = []
        for entry in entries:
            if "msgId" in entry and entry["index"] not in finished:
                if all(index != entry["index"] for index, _ in unfinished):
                    unfinished.append((entry["index"], entry["msgId"]))

        def outputs_of(index: int) -> list[dict[str, Any]]:
            return [e["output"] for e in entries if "output" in e and e["index"] == index]

        # Cells start only once the setup is done: a journal with cells says so too.
        setup_done = setup_done or bool(entries)
        seen = tuple(e["m"] for e in entries if isinstance(e.get("m"), str))
        if not unfinished:
            return JournalProgress(finished, None, setup_done=setup_done, seen_msg_ids=seen)
        if len(unfinished) == 1:
            return JournalProgress(
                finished,
                unfinished[0],
                outputs_of(unfinished[0][0]),
                setup_done=setup_done,
                seen_msg_ids=seen,
            )
        (replied, _), in_flight = unfinished[0], unfinished[-1]
        return JournalProgress(
            finished,
            in_flight,
            outputs_of(in_flight[0]),
            replied=(replied, outputs_of(replied)),
            setup_done=setup_done,
            seen_msg_ids=seen,
        )

    async def clear(self) -> None:
        """Forgets every cell (their work is committed): a long-lived session's journal holds only its
        operation in flight. That a setup was done is kept."""
        await asyncio.to_thread(self._clear)
        self._output_bytes.clear()

    def _clear(self) -> None:
        kept = [e for e in self._read() if "setup" in e and "index" not in e]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        shutil.rmtree(self.spill_dir, ignore_errors=True)

    async def remove(self) -> None:
        await asyncio.to_thread(self.path.unlink, True)
        await asyncio.to_thread(shutil.rmtree, self.spill_dir, True)


@dataclass
class JournalProgress:
    finished: dict[int, dict[str, Any]]
    in_flight: tuple[int, str] | None
    partial_outputs: list[dict[str, Any]] = field(default_factory=list)
    replied: tuple[int, list[dict[str, Any]]] | None = None
    """A cell that replied ok but whose end was not recorded when the next one was sent ahead: its
    index and the outputs the journal holds (the cell itself ran once and is not run again)."""
    setup_done: bool = False
    seen_msg_ids: tuple[str, ...] = ()
    """The kernel messages whose outputs the journal holds (a reattached connection drops them)."""
    """The attempt's kernel holds the run's setup (see WorkJournal.setup_done)."""
