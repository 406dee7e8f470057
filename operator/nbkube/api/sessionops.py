"""The operations on a NotebookSession, as the user API takes and answers them (JSON, camelCase).

One home for the wire format the operator, the CLI and `nbkube mcp` share. Requests that change the
notebook may carry `expectHead`: the operation is refused (409 Conflict) when the session's head is
no longer that commit, so two writers never lose each other's change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from nbkube.api.common import ApiModel
from nbkube.api.run import CELL_ID_PATTERN
from nbkube.api.session import COMMIT_PATTERN, KernelState
from nbkube.api.states import CellState

MAX_SOURCE_CHARS = 1_000_000
MAX_CELLS_PER_EXECUTION = 2000

CellId = Annotated[str, Field(min_length=1, max_length=64, pattern=CELL_ID_PATTERN)]


class EditAction(StrEnum):
    INSERT = "insert"
    REPLACE = "replace"
    DELETE = "delete"


class EditRequest(ApiModel):
    """insert (after `after`, or at the top), replace `cellId` (a code cell's outputs are cleared) or
    delete `cellId`."""

    action: EditAction
    cell_id: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=CELL_ID_PATTERN,
        description="The cell replaced or deleted; for insert, the new cell's id (default: a fresh one).",
    )
    after: str | None = Field(None, min_length=1, max_length=64, pattern=CELL_ID_PATTERN)
    source: str = Field("", max_length=MAX_SOURCE_CHARS)
    cell_type: Literal["code", "markdown", "raw"] | None = None
    expect_head: str | None = Field(None, pattern=COMMIT_PATTERN)

    @model_validator(mode="after")
    def _target(self) -> EditRequest:
        if self.action != EditAction.INSERT and self.cell_id is None:
            raise ValueError(f"{self.action.value} needs cellId")
        if self.action != EditAction.INSERT and self.after is not None:
            raise ValueError("after applies to insert only")
        return self


class ExecuteRequest(ApiModel):
    """Executes the code cells named (in notebook order), or all of them from `start` on (the first
    cell when absent). Stops at the first cell that fails."""

    cell_ids: list[CellId] | None = Field(None, min_length=1, max_length=MAX_CELLS_PER_EXECUTION)
    start: str | None = Field(None, min_length=1, max_length=64, pattern=CELL_ID_PATTERN)
    timeout_seconds: int | None = Field(
        None, ge=1, le=7 * 86400, description="Per cell (default: the session's executionTimeoutSeconds)."
    )
    expect_head: str | None = Field(None, pattern=COMMIT_PATTERN)

    @model_validator(mode="after")
    def _one_way(self) -> ExecuteRequest:
        if self.cell_ids is not None and self.start is not None:
            raise ValueError("give cellIds or start, not both")
        return self


class CellOutcome(ApiModel):
    """One cell of an execution, as it ended."""

    id: str
    state: CellState
    execution_count: int | None = None
    duration_ms: float | None = None
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    truncated: bool = Field(False, description="Outputs were cut; the whole ones are in `artifact`.")


class OperationResult(ApiModel):
    """What an operation did: the session's head after it (its commit), and for an execution its cells."""

    operation: str
    head: str | None = None
    message: str = ""
    cell_id: str | None = None
    cells: list[CellOutcome] = Field(default_factory=list)
    artifact: str | None = Field(
        None, description="Path (at `head`) of the whole outputs of truncated cells, JSON lines."
    )
    kernel_state: KernelState | None = None
    execution_count: int | None = None


class Variable(ApiModel):
    name: str
    type: str
    shape: str | None = None
    length: int | None = None
    repr: str = ""


class KernelVariables(ApiModel):
    """The kernel's user variables, read without a cell and without bumping the execution count."""

    variables: list[Variable] = Field(default_factory=list)
    truncated: bool = False
    execution_count: int | None = None
    kernel_state: KernelState | None = None


class HistoryEntry(ApiModel):
    commit: str
    time: str
    message: str
