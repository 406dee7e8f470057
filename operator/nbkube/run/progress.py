"""A run's progress book: its status, its cells, its conditions, and the writes that carry them.

Every status change of a run goes through the book: the state with its reason and conditions, the
per-cell table (bounded, run/cellstatus.py), the coalesced writes (StatusWriter) and the final one,
with the run's terminal event.
"""

from __future__ import annotations

import time

import kopf
from nbformat import NotebookNode

from nbkube.api import TERMINAL_RUN_STATES, CellStatus, ConditionStatus, NotebookRunStatus, RunState
from nbkube.api.common import now_rfc3339, parse_timestamp, set_condition
from nbkube.api.states import NOT_RUN_CELL_STATES, CellState
from nbkube.kernelwork.statuswriter import StatusWriter, status_patcher
from nbkube.kube import Kube, run_path
from nbkube.run import cellstatus
from nbkube.run.outcome import Outcome

_SUCCEEDED_CONDITION = {
    RunState.SUCCEEDED: ConditionStatus.TRUE,
    RunState.FAILED: ConditionStatus.FALSE,
    RunState.CANCELLED: ConditionStatus.FALSE,
}


class ProgressBook:
    def __init__(self, kube: Kube, body: kopf.Body, interval: float) -> None:
        meta = body["metadata"]
        self.kube = kube
        self.body = body
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.generation: int | None = meta.get("generation")
        self.status = NotebookRunStatus.model_validate(dict(body.get("status") or {}))
        self.writer = StatusWriter(
            status_patcher(kube, run_path(self.namespace, self.name, "status")),
            interval,
            label=f"{self.namespace}/{self.name}",
        )
        self._cells: list[CellStatus] = []

    # writes

    def publish(self) -> None:
        """The status is written within one interval (coalesced with later changes)."""
        self.writer.update(self.status.to_api)

    async def flush(self) -> None:
        """The status is written now (a transition the user must see at once)."""
        await self.writer.flush(self.status.to_api())

    async def finish(self, outcome: Outcome) -> None:
        """The run's terminal status and event; the status is written until it lands."""
        self.status.completion_time = now_rfc3339()
        self.status.kernel = None
        self.set_progress(outcome.state, outcome.reason, outcome.message)
        # Events first: once the terminal status lands, kopf stops this daemon.
        if outcome.state == RunState.SUCCEEDED:
            kopf.info(self.body, reason=outcome.reason, message=outcome.message)
        else:
            kopf.warn(self.body, reason=outcome.reason, message=outcome.message)
        await self.writer.write_final(self.status.to_api())

    # state

    def set_progress(self, state: RunState, reason: str, message: str) -> None:
        st = self.status
        st.state = state
        st.reason = reason
        st.message = message
        st.observed_generation = self.generation
        terminal = state in TERMINAL_RUN_STATES
        st.conditions = set_condition(
            st.conditions,
            "Progressing",
            ConditionStatus.FALSE if terminal else ConditionStatus.TRUE,
            reason,
            message,
            self.generation,
        )
        succeeded = _SUCCEEDED_CONDITION.get(state, ConditionStatus.UNKNOWN)
        st.conditions = set_condition(st.conditions, "Succeeded", succeeded, reason, message, self.generation)
        self._touch_duration()

    def _touch_duration(self) -> None:
        started = parse_timestamp(self.status.start_time)
        if started is not None:
            end = parse_timestamp(self.status.completion_time) or time.time()
            self.status.duration = cellstatus.format_duration(end - started)

    # cells

    def init_cells(self, notebook: NotebookNode) -> None:
        """Every cell pending (code) or skipped (the rest), as before a first attempt."""
        self._cells = [
            CellStatus(
                index=i,
                id=str(cell.get("id", f"cell-{i}")),
                state=CellState.PENDING if cell.get("cell_type") == "code" else CellState.SKIPPED,
            )
            for i, cell in enumerate(notebook.cells)
        ]
        self.status.cells_total = len(self._cells)
        self._refresh_cells()

    def cell(self, index: int) -> CellStatus:
        return self._cells[index]

    def cell_running(self, index: int) -> None:
        self._cells[index].state = CellState.RUNNING
        self._refresh_cells()

    def mark_from_cell(self, index: int, cell: NotebookNode, state: CellState | None = None) -> None:
        """The cell's entry from the executed cell (the engine's metadata.nbkube and outputs)."""
        meta = cell.get("metadata", {}).get("nbkube", {})
        duration = meta.get("duration_ms")
        entry = self._cells[index]
        entry.state = state or CellState(meta.get("state", CellState.SUCCEEDED))
        entry.execution_count = cell.get("execution_count")
        entry.duration_ms = round(duration) if duration is not None else None
        entry.summary = cellstatus.summarize_outputs(cell.get("outputs", []))
        self._refresh_cells()

    def cells_executed(self) -> int:
        return sum(1 for c in self._cells if c.state not in NOT_RUN_CELL_STATES)

    def _refresh_cells(self) -> None:
        done = sum(1 for c in self._cells if c.state not in (CellState.PENDING, CellState.RUNNING))
        self.status.cells_done = done
        self.status.progress = f"{done}/{len(self._cells)}"
        kept, omitted = cellstatus.bound_cells(self._cells)
        self.status.cells = kept
        self.status.cells_omitted = omitted
        self._touch_duration()
