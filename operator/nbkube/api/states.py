"""The one definition of a run's and a cell's states, as status shows them.

Plain enums, importing nothing: the operator, the sweep, the CLI and the engine (which knows nothing of
Kubernetes: these are just the words of `status`) all take them from here.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    """A one-word summary of a NotebookRun's conditions, for printer columns and the CLI."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
"""A run in one of these has ended for good."""


class CellState(StrEnum):
    """Where one cell of a run is (status.cells[].state, and the engine's CellResult.state)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timedOut"
    KERNEL_DIED = "kernelDied"
    CANCELLED = "cancelled"
    INPUT_REQUESTED = "inputRequested"


NOT_RUN_CELL_STATES = frozenset({CellState.PENDING, CellState.SKIPPED})
"""Cells in these did not run (yet, or ever)."""
