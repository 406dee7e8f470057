"""A session's status: its state and Ready condition, its kernel, its branch and head, its cells.

Written through the shared StatusWriter (coalesced; transitions at once; the final write until it
lands). The cell table is bounded like a run's (run/cellstatus.py).
"""

from __future__ import annotations

import kopf
from nbformat import NotebookNode

from nbkube.api import CellStatus, ConditionStatus
from nbkube.api.common import now_rfc3339, set_condition
from nbkube.api.session import KernelState, NotebookSessionStatus, SessionState
from nbkube.api.states import CellState
from nbkube.kernelwork.statuswriter import StatusWriter, status_patcher
from nbkube.kube import Kube, session_path
from nbkube.run import cellstatus


class SessionBook:
    def __init__(self, kube: Kube, body: kopf.Body, interval: float) -> None:
        meta = body["metadata"]
        self.kube = kube
        self.body = body
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.generation: int | None = meta.get("generation")
        self.status = NotebookSessionStatus.model_validate(dict(body.get("status") or {}))
        self.writer = StatusWriter(
            status_patcher(kube, session_path(self.namespace, self.name, "status")),
            interval,
            label=f"{self.namespace}/{self.name}",
        )

    def publish(self) -> None:
        self.writer.update(self.status.to_api)

    async def flush(self) -> None:
        await self.writer.flush(self.status.to_api())

    def set_state(self, state: SessionState, reason: str, message: str) -> None:
        st = self.status
        st.state, st.reason, st.message = state, reason, message
        st.observed_generation = self.generation
        ready = ConditionStatus.TRUE if state == SessionState.READY else ConditionStatus.FALSE
        st.conditions = set_condition(st.conditions, "Ready", ready, reason, message, self.generation)

    def set_kernel_state(self, state: KernelState) -> None:
        if self.status.kernel is not None:
            self.status.kernel.state = state

    def touch(self) -> None:
        self.status.last_activity_time = now_rfc3339()

    def show_cells(self, notebook: NotebookNode) -> None:
        """The cell table from the notebook as it is (each cell's last execution, if any)."""
        cells = [_cell_status(i, cell) for i, cell in enumerate(notebook.cells)]
        kept, omitted = cellstatus.bound_cells(cells)
        self.status.cells, self.status.cells_omitted = kept, omitted
        self.status.cells_total = len(cells)

    async def end(self, reason: str, message: str) -> None:
        """The session's last status (Ended, no kernel) and event; written until it lands."""
        self.status.end_time = now_rfc3339()
        self.status.kernel = None
        self.set_state(SessionState.ENDED, reason, message)
        kopf.info(self.body, reason=reason, message=message)
        await self.writer.write_final(self.status.to_api())


def _cell_status(index: int, cell: NotebookNode) -> CellStatus:
    meta = cell.get("metadata", {}).get("nbkube", {})
    if cell.get("cell_type") != "code":
        state = CellState.SKIPPED
    else:
        try:
            state = CellState(meta.get("state", CellState.PENDING))
        except ValueError:
            state = CellState.PENDING
    duration = meta.get("duration_ms")
    return CellStatus(
        index=index,
        id=str(cell.get("id", f"cell-{index}"))[:64],
        state=state,
        execution_count=cell.get("execution_count"),
        duration_ms=round(duration) if isinstance(duration, int | float) and duration >= 0 else None,
        summary=cellstatus.summarize_outputs(cell.get("outputs", []))
        if cell.get("cell_type") == "code"
        else None,
    )
