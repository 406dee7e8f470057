"""How a run ends: the terminal state, reason and message, decided from what happened."""

from __future__ import annotations

from dataclasses import dataclass

from nbkube.api import CellStatus, Reason, RunState
from nbkube.api.states import CellState
from nbkube.kernelwork.failures import Failure
from nbkube.kernelwork.stops import StopCause

DEADLINE_MESSAGE = "the run's deadline (timeouts.runSeconds) passed"


@dataclass(frozen=True)
class Outcome:
    state: RunState
    reason: str
    message: str

    @property
    def retryable(self) -> bool:
        """Only infrastructure failures are retried, never a failing cell."""
        return self.reason in (Reason.KERNEL_DIED, Reason.GATEWAY_LOST)


def succeeded(cells: int) -> Outcome:
    return Outcome(RunState.SUCCEEDED, Reason.SUCCEEDED, f"{cells} cell(s) executed")


def failed(reason: str, message: str) -> Outcome:
    return Outcome(RunState.FAILED, reason, message)


def cancelled(message: str = "cancelled by spec.cancel") -> Outcome:
    return Outcome(RunState.CANCELLED, Reason.CANCELLED, message)


def from_failure(failure: Failure) -> Outcome:
    return failed(failure.reason, failure.message)


def stopped_by(cause: StopCause, failure: Failure | None = None) -> Outcome | None:
    """How a run ends when `cause` stopped its work; None when it does not end (the operator is
    stopping: the run goes on after the restart)."""
    if cause == StopCause.CANCEL:
        return cancelled()
    if cause == StopCause.DEADLINE:
        return failed(Reason.DEADLINE_EXCEEDED, DEADLINE_MESSAGE)
    if cause == StopCause.FAILURE and failure is not None:
        return from_failure(failure)
    if cause == StopCause.FAILURE:
        return cancelled()
    return None


def of_execution(
    state: CellState, failed_cell: CellStatus | None, executed: int, cell_seconds: float | None
) -> Outcome:
    """The outcome of an execution that ended in `state` (the notebook's), `failed_cell` the entry of
    the cell it ended at."""
    if state == CellState.SUCCEEDED:
        return succeeded(executed)
    label = f"cell {failed_cell.index} ({failed_cell.id})" if failed_cell is not None else "a cell"
    if state == CellState.KERNEL_DIED:
        return failed(Reason.KERNEL_DIED, f"the kernel died while running {label}")
    if state == CellState.TIMED_OUT:
        return failed(Reason.TIMED_OUT, f"{label} ran longer than timeouts.cellSeconds={cell_seconds}")
    if state == CellState.CANCELLED:
        return cancelled()
    summary = (failed_cell.summary if failed_cell is not None else None) or "error"
    return failed(Reason.CELL_ERROR, f"{label} failed: {summary}")


def should_retry(outcome: Outcome, attempt: int, retries: int, *, stopping: bool) -> bool:
    """Whether a fresh attempt follows: an infrastructure failure with a retry left, and nothing
    (a cancel, the deadline, a failure of the run's bookkeeping) stopping the run."""
    return outcome.retryable and attempt <= retries and not stopping
