"""Cells executed on a held kernel with every step journaled, so a restarted operator reattaches
where the work was and never runs a cell twice (journal.py holds the journal's format).

The journal's steps are guarded (an error fails the work with JournalNotWritten instead of escaping
into the engine); what the work does with a cell's start and end (its status, a checkpoint) is the
caller's hooks, which guard their own steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nbformat import NotebookNode

from nbkube import memory
from nbkube.api import Reason
from nbkube.api.states import NOT_RUN_CELL_STATES
from nbkube.engine import CellResult, KernelConnection, NotebookExecutor, OutputLimits
from nbkube.engine import setup as kernel_setup
from nbkube.kernelwork.failures import Failures
from nbkube.kernelwork.journal import WorkJournal
from nbkube.metrics import cell_duration

OnStarted = Callable[[int, str], None]  # (cell index, msg_id)
OnFinished = Callable[[int, NotebookNode, CellResult], None]
OnOutput = Callable[[int, dict[str, Any]], None]  # (cell index, the output or a stream's new chunk)


async def open_journal(journal: WorkJournal, failures: Failures) -> bool:
    """Opens the journal off the loop, before the first (in-line) append; False when it failed."""
    with failures.guard(Reason.JOURNAL_NOT_WRITTEN, "opening the journal"):
        await journal.open()
    return failures.first is None


def journaled_executor(
    connection: KernelConnection,
    notebook: NotebookNode,
    journal: WorkJournal,
    attempt: int,
    failures: Failures,
    *,
    on_started: OnStarted,
    on_finished: OnFinished,
    on_output: OnOutput | None = None,
    limits: OutputLimits,
    cell_timeout: float | None = None,
    allow_errors: bool = False,
) -> NotebookExecutor:
    """An executor of `notebook`'s cells on `connection` whose every cell start, output and end is
    journaled under `attempt` before the hooks hear of it."""

    async def on_cell_start(index: int, cell: Any, msg_id: str) -> None:
        with failures.guard(Reason.JOURNAL_NOT_WRITTEN, f"journaling the start of cell {index}"):
            await journal.started(attempt, index, msg_id)
        on_started(index, msg_id)

    carried_by: list[str | None] = [None]  # the kernel message of the output that comes next

    def on_output_message(index: int, msg_id: str) -> None:
        carried_by[0] = msg_id

    def on_cell_output(index: int, output: dict[str, Any]) -> None:
        msg_id, carried_by[0] = carried_by[0], None
        with failures.guard(Reason.JOURNAL_NOT_WRITTEN, f"journaling an output of cell {index}"):
            journal.output(attempt, index, output, msg_id)
        if on_output is not None:
            on_output(index, output)

    async def on_cell_end(index: int, result: CellResult) -> None:
        cell = notebook.cells[index]
        with failures.guard(Reason.JOURNAL_NOT_WRITTEN, f"journaling cell {index}"):
            if result.state not in NOT_RUN_CELL_STATES:
                await journal.record(attempt, index, dict(cell))
        if result.duration_ms is not None:
            cell_duration.labels(result.state).observe(result.duration_ms / 1000)
        on_finished(index, cell, result)

    return NotebookExecutor(
        connection,
        cell_timeout=cell_timeout,
        allow_errors=allow_errors,
        limits=limits,
        on_cell_start=on_cell_start,
        on_output=on_cell_output,
        on_cell_end=on_cell_end,
        on_output_message=on_output_message,
    )


async def apply_setup(
    connection: KernelConnection,
    setup: kernel_setup.KernelSetup,
    journal: WorkJournal,
    attempt: int,
    failures: Failures,
) -> None:
    """The work's setup (engine/setup.py: files, env, working directory), silently, before the first
    cell: it never shows in the notebook; the journal records that it was done, not what it held.
    Pass `setup` so that nothing else holds it (straight from the holder that gives it up): its
    files' memory is given back here once it is sent."""
    size = setup.file_bytes
    await kernel_setup.apply_setup(connection, setup)
    del setup
    memory.release_freed_memory(size)
    with failures.guard(Reason.JOURNAL_NOT_WRITTEN, "journaling the run's setup"):
        await journal.setup_done(attempt)
