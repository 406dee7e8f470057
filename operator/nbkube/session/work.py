"""What each operation of a session does with its notebook and its kernel, and the commit it makes.

The session's driver (session/driver.py) runs one operation at a time; this module does the work of
each: an edit by cell id, an execution (journaled, streamed, truncated outputs kept whole as an
artifact), a restart, a read of the kernel's variables. Every operation that changes the notebook is
one commit on the session's branch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import nbjson

from nbkube.api import Reason
from nbkube.api.session import KernelState
from nbkube.api.sessionops import (
    CellOutcome,
    EditAction,
    EditRequest,
    ExecuteRequest,
    KernelVariables,
    OperationResult,
    Variable,
)
from nbkube.api.states import CellState
from nbkube.engine import (
    CellResult,
    ExecutionLost,
    GatewayUnavailable,
    KernelNotFound,
    NotebookExecutor,
    OutputLimits,
    bounded_outputs,
)
from nbkube.engine.variables import VariablesUnavailable, user_variables
from nbkube.kernels import KernelLease
from nbkube.kernelwork.failures import Failures
from nbkube.kernelwork.journal import JournalProgress, WorkJournal
from nbkube.kernelwork.journaled import journaled_executor
from nbkube.results import BranchCommit, StaleBranch
from nbkube.session import history
from nbkube.session.book import SessionBook
from nbkube.session.document import EditError, SessionDocument

log = logging.getLogger(__name__)

ARTIFACT_BYTES = 256 * 1024 * 1024
"""The whole outputs one execution keeps (its artifact); a run keeps DEFAULT_MAX_SPILL_BYTES."""
STREAM_BYTES = 8 * 1024 * 1024
"""Outputs streamed to one caller per execution; past it the stream says so (the result has them)."""

Emit = Callable[[dict[str, Any]], None]


class SessionStore(Protocol):
    """What a session needs of its namespace's results repository."""

    async def start_branch(self, namespace: str, branch: str, base: str | None) -> str | None: ...

    async def commit_files(
        self,
        namespace: str,
        branch: str,
        files: Mapping[str, bytes | Path],
        message: str,
        *,
        parent: str | None,
    ) -> str: ...

    async def read_file(self, namespace: str, path: str, ref: str = "HEAD") -> bytes: ...

    async def history(
        self, namespace: str, ref: str, *, limit: int, trailer: str | None = None
    ) -> list[BranchCommit]: ...


class OperationError(Exception):
    """An operation refused: an HTTP status, a CamelCase reason and a message for the caller."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def conflict(message: str) -> OperationError:
    return OperationError(409, "Conflict", message)


@dataclass
class Committed:
    head: str
    artifact: str | None = None


# Given the lease of a kernel the gateway no longer has: a fresh, set-up kernel, or why there is none.
KernelReplacer = Callable[[KernelLease], Awaitable[KernelLease | str]]


class SessionWork:
    """The session's notebook and held kernel. One operation at a time (the driver's queue)."""

    def __init__(
        self,
        *,
        book: SessionBook,
        journal: WorkJournal,
        store: SessionStore,
        failures: Failures,
        document: SessionDocument,
        lease: KernelLease,
        file_name: str,
        execution_timeout: float,
        replace_kernel: KernelReplacer | None = None,
    ) -> None:
        self.book = book
        self.journal = journal
        self.store = store
        self.failures = failures
        self.document = document
        self.lease = lease
        self.file_name = file_name
        self.execution_timeout = execution_timeout
        self._replace_kernel = replace_kernel
        self._executor: NotebookExecutor | None = None

    @property
    def namespace(self) -> str:
        return self.book.namespace

    @property
    def name(self) -> str:
        return self.book.name

    @property
    def head(self) -> str | None:
        return self.book.status.head

    @property
    def branch(self) -> str:
        assert self.book.status.branch is not None
        return self.book.status.branch

    @property
    def path(self) -> str:
        return history.notebook_path(self.namespace, self.name, self.file_name)

    def check_head(self, expected: str | None) -> None:
        head = self.head or ""
        if expected is not None and not head.startswith(expected):
            raise conflict(f"the session's head is {head[:12]}, not {expected}: read the notebook again")

    # -- commits ------------------------------------------------------------------------------------

    async def commit(
        self,
        summary: str,
        trailers: Mapping[str, str | int | None],
        spill: Path | None = None,
        *,
        operation: bool = True,
    ) -> Committed:
        """The notebook as it is now (and an execution's artifact) as one commit on the branch; it
        counts as an operation unless `operation` is False (the branch's first commit)."""
        number = self.book.status.operations + (1 if operation else 0)
        files: dict[str, bytes | Path] = {self.path: _notebook_bytes(self.document.notebook)}
        artifact = None
        if spill is not None and await asyncio.to_thread(_has_content, spill):
            artifact = history.artifact_path(self.namespace, self.name, number)
            files[artifact] = spill
        message = history.commit_message(
            summary,
            {history.SESSION_KEY: f"{self.namespace}/{self.name}", history.OPERATION_KEY: number, **trailers},
        )
        try:
            head = await self.store.commit_files(
                self.namespace, self.branch, files, message, parent=self.head
            )
        except StaleBranch as exc:  # only this driver writes the branch: someone moved it by hand
            raise conflict(f"the session's branch moved outside the session: {exc}") from None
        status = self.book.status
        status.head = head
        status.operations = number
        self.book.show_cells(self.document.notebook)
        self.book.touch()
        return Committed(head, artifact)

    # -- edits --------------------------------------------------------------------------------------

    async def edit(self, request: EditRequest) -> OperationResult:
        self.check_head(request.expect_head)
        doc = self.document
        cells_before = list(doc.notebook.cells)
        try:
            if request.action == EditAction.INSERT:
                cell_id = doc.insert(
                    request.source,
                    after=request.after,
                    cell_type=request.cell_type or "code",
                    cell_id=request.cell_id,
                )
                where = f"after {request.after}" if request.after else "at the top"
                summary = f"insert {request.cell_type or 'code'} cell {cell_id} {where}"
            elif request.action == EditAction.REPLACE:
                assert request.cell_id is not None
                cell_id = request.cell_id
                doc.replace(cell_id, request.source, cell_type=request.cell_type)
                summary = f"replace cell {cell_id}"
            else:
                assert request.cell_id is not None
                cell_id = request.cell_id
                doc.delete(cell_id)
                summary = f"delete cell {cell_id}"
        except EditError as exc:
            raise OperationError(400, "BadRequest", str(exc)) from None
        try:
            committed = await self.commit(summary, {"Operation": request.action.value, "Cell": cell_id})
        except BaseException:
            doc.notebook.cells = cells_before  # not committed: not made (an edit touches only the list)
            raise
        return OperationResult(
            operation=request.action.value, head=committed.head, message=summary, cell_id=cell_id
        )

    # -- executions ---------------------------------------------------------------------------------

    async def execute(self, request: ExecuteRequest, emit: Emit) -> OperationResult:
        self.check_head(request.expect_head)
        kernel = self.book.status.kernel
        if kernel is not None and kernel.state == KernelState.DEAD:
            raise conflict("the session's kernel died: restart it first (its state is lost)")
        try:
            cell_ids = self.document.code_ids(request.cell_ids, start=request.start)
        except EditError as exc:
            raise OperationError(400, "BadRequest", str(exc)) from None
        operation = self.book.status.operations + 1
        timeout = request.timeout_seconds or self.execution_timeout
        started = time.monotonic()
        self.failures = Failures(self.failures.label)  # a bookkeeping error costs one execution only
        results, spill = await self._run_cells(operation, cell_ids, timeout, emit)
        return await self._finish_execution(results, cell_ids, spill, started)

    async def resume(self, operation: int, progress: JournalProgress) -> OperationResult | None:
        """After an operator restart: the execution the dead operator ran, completed. Its finished cells
        come from the journal, the cell in flight is collected from the kernel (not run again), later
        cells of it are not run; then it is committed like any execution. None when nothing was in
        flight."""
        doc = self.document
        if not progress.finished and progress.in_flight is None and progress.replied is None:
            return None
        started = time.monotonic()
        results: list[CellResult] = []
        for index, cell in sorted(progress.finished.items()):
            if index < len(doc.notebook.cells):
                doc.notebook.cells[index] = nbformat.from_dict(cell)
                state = CellState(
                    cell.get("metadata", {}).get("nbkube", {}).get("state", CellState.SUCCEEDED)
                )
                results.append(CellResult(index, str(cell.get("id")), state=state, resumed=True))
        if progress.replied is not None:
            index, outputs = progress.replied
            cell = doc.notebook.cells[index]
            cell.outputs = await bounded_outputs(outputs, OutputLimits())
            cell.setdefault("metadata", {})["nbkube"] = {"state": CellState.SUCCEEDED.value, "resumed": True}
            results.append(CellResult(index, str(cell["id"]), state=CellState.SUCCEEDED, resumed=True))
        spill = None
        if progress.in_flight is not None and progress.in_flight[0] < len(doc.notebook.cells):
            index, msg_id = progress.in_flight
            executor = self._executor_for(operation, self.execution_timeout)
            self.book.set_kernel_state(KernelState.BUSY)
            try:
                result = await executor.resume_cell(
                    doc.notebook.cells[index], index, msg_id, tuple(progress.partial_outputs)
                )
            except (GatewayUnavailable, ExecutionLost) as exc:
                result = CellResult(index, str(doc.notebook.cells[index]["id"]), state=CellState.KERNEL_DIED)
                result.error_name, result.error_value = type(exc).__name__, str(exc)
            await executor.budget.spill.flush()
            spill = executor.spill_path
            results.append(result)
            self._settle_kernel(results)
        results.sort(key=lambda r: r.index)
        ids = [r.cell_id for r in results]
        return await self._finish_execution(
            results, ids, spill, started, note="resumed after an operator restart"
        )

    async def _run_cells(
        self, operation: int, cell_ids: list[str], timeout: float, emit: Emit
    ) -> tuple[list[CellResult], Path | None]:
        book, doc = self.book, self.document
        kernel = book.status.kernel
        assert kernel is not None
        streamed = 0

        def on_started(index: int, msg_id: str) -> None:
            kernel.cell_index, kernel.msg_id = index, msg_id
            cell = doc.notebook.cells[index]
            emit({"type": "cellStarted", "cellId": cell["id"]})
            book.publish()

        def on_output(index: int, output: dict[str, Any]) -> None:
            nonlocal streamed
            if streamed > STREAM_BYTES:
                return
            size = len(str(output))
            streamed += size
            cell_id = doc.notebook.cells[index]["id"]
            if streamed > STREAM_BYTES:
                emit({"type": "streamTruncated", "cellId": cell_id})
                return
            emit({"type": "output", "cellId": cell_id, "output": output})

        def on_finished(index: int, cell: NotebookNode, result: CellResult) -> None:
            with self.failures.guard(Reason.STATUS_NOT_UPDATED, f"the status of cell {cell['id']}"):
                emit({"type": "cellFinished", "cellId": cell["id"], "state": result.state.value})
                book.show_cells(doc.notebook)
                book.publish()

        executor = self._executor_for(operation, timeout, on_started, on_output, on_finished)
        self._executor = executor
        book.set_kernel_state(KernelState.BUSY)
        book.publish()  # (coalesced: a write per cell would cost every execution an API round trip)
        results: list[CellResult] = []
        try:
            await self._record_language_info()
            for cell_id in cell_ids:
                index = doc.index_of(cell_id)
                result = await executor.execute_cell(doc.notebook.cells[index], index)
                results.append(result)
                if result.blocks_notebook or executor.cancelled:
                    break
        except (GatewayUnavailable, ExecutionLost) as exc:
            log.warning("%s/%s: the kernel was lost during an execution: %s", self.namespace, self.name, exc)
            book.set_kernel_state(KernelState.DEAD)
            dead = CellResult(len(results), cell_ids[len(results)], state=CellState.KERNEL_DIED)
            dead.error_name, dead.error_value = type(exc).__name__, str(exc)
            results.append(dead)
        finally:
            self._executor = None
            kernel.cell_index = kernel.msg_id = None
        await executor.budget.spill.flush()
        self._settle_kernel(results)
        return results, executor.spill_path

    def _settle_kernel(self, results: list[CellResult]) -> None:
        """The kernel's state and count after an execution."""
        book = self.book
        kernel = book.status.kernel
        if results and results[-1].state == CellState.KERNEL_DIED:
            book.set_kernel_state(KernelState.DEAD)
        elif kernel is not None and kernel.state == KernelState.BUSY:
            book.set_kernel_state(KernelState.IDLE)
        counts = [r.execution_count for r in results if r.execution_count is not None]
        if counts:
            book.status.execution_count = max(counts)

    def _executor_for(
        self,
        operation: int,
        timeout: float,
        on_started: Callable[[int, str], None] | None = None,
        on_output: Callable[[int, dict[str, Any]], None] | None = None,
        on_finished: Callable[[int, NotebookNode, CellResult], None] | None = None,
    ) -> NotebookExecutor:
        """A journaled executor of the session's notebook for one execution; its spill is the
        execution's artifact."""

        def ignore_start(index: int, msg_id: str) -> None:
            return None

        def ignore_end(index: int, cell: NotebookNode, result: CellResult) -> None:
            return None

        return journaled_executor(
            self.lease.connection,
            self.document.notebook,
            self.journal,
            operation,
            self.failures,
            on_started=on_started or ignore_start,
            on_finished=on_finished or ignore_end,
            on_output=on_output,
            limits=OutputLimits(
                spill_dir=self.journal.spill_dir / f"op-{operation}", spill_bytes=ARTIFACT_BYTES
            ),
            cell_timeout=timeout,
        )

    async def _record_language_info(self) -> None:
        metadata = self.document.notebook.metadata
        if "language_info" in metadata:
            return
        info = await self.lease.connection.kernel_info(reply_timeout=30.0)
        if "language_info" in info:
            metadata["language_info"] = info["language_info"]

    async def _finish_execution(
        self,
        results: list[CellResult],
        cell_ids: list[str],
        spill: Path | None,
        started: float,
        note: str | None = None,
    ) -> OperationResult:
        duration_ms = (time.monotonic() - started) * 1000
        last = results[-1].state if results else CellState.SUCCEEDED
        outcome = "succeeded" if all(not r.blocks_notebook for r in results) else last.value
        ran = [r.cell_id for r in results]
        names = ", ".join(ran[:5]) + (f" and {len(ran) - 5} more" if len(ran) > 5 else "")
        counted = f"{len(ran)} of {len(cell_ids)} cells, {duration_ms:.0f} ms"
        summary = f"execute {names or 'no cell'}: {outcome} ({counted})"
        if note:
            summary += f", {note}"
        committed = await self.commit(
            summary,
            {
                "Operation": "execute",
                "Cells": ",".join(ran)[:500],
                "Outcome": outcome,
                "Duration-Ms": round(duration_ms),
                "Note": note,
            },
            spill,
        )
        cells = []
        for result in results:
            cell = self.document.cell(result.cell_id) if result.cell_id in self.document.ids() else None
            cells.append(
                CellOutcome(
                    id=result.cell_id,
                    state=result.state,
                    execution_count=result.execution_count,
                    duration_ms=result.duration_ms,
                    outputs=list(cell.get("outputs", [])) if cell is not None else [],
                    truncated=result.truncated,
                )
            )
        await self.journal.clear()
        status = self.book.status
        if self.failures.first is not None:
            summary += f"; {self.failures.first.reason}: {self.failures.first.message}"
        return OperationResult(
            operation="execute",
            head=committed.head,
            message=summary,
            cells=cells,
            artifact=committed.artifact,
            kernel_state=status.kernel.state if status.kernel else None,
            execution_count=status.execution_count,
        )

    # -- kernel -------------------------------------------------------------------------------------

    def interrupt(self) -> bool:
        """Interrupts the running execution (its cell ends cancelled, later cells are not run); False
        when nothing runs."""
        executor = self._executor
        if executor is None:
            return False
        executor.cancel()
        return True

    async def restart(self) -> OperationResult:
        """A fresh kernel process in the same kernel (state lost, and said so); outputs stay."""
        book = self.book
        died = book.status.kernel is not None and book.status.kernel.state == KernelState.DEAD
        book.set_kernel_state(KernelState.RESTARTING)
        await book.flush()
        message = "kernel restarted: its variables and imports are gone; outputs in the notebook stay"
        try:
            if died:  # the gateway's restarter has brought it back already: a second restart would race it
                await self.lease.connection.reconnect()
            else:
                await self.lease.connection.restart_kernel()
            await self.lease.connection.until_answering(60.0)
        except KernelNotFound:
            # The gateway no longer has it (its restarter gave up after repeated deaths): a fresh one.
            replaced = await self._replace_kernel(self.lease) if self._replace_kernel else "no kernel source"
            if isinstance(replaced, str):
                book.set_kernel_state(KernelState.DEAD)
                raise OperationError(
                    503, "ServiceUnavailable", f"the kernel was gone and none could replace it: {replaced}"
                ) from None
            self.lease = replaced
            message = (
                f"the kernel was gone from its gateway: a fresh kernel {replaced.kernel_id[:8]} on "
                f"{replaced.pod}; its variables and imports are gone; outputs in the notebook stay"
            )
        except Exception as exc:
            book.set_kernel_state(KernelState.DEAD)
            raise OperationError(
                503, "ServiceUnavailable", f"the kernel could not be restarted: {exc}"
            ) from None
        book.set_kernel_state(KernelState.IDLE)
        book.status.execution_count = 0
        book.touch()
        await book.flush()  # a transition the user waits for
        return OperationResult(
            operation="restart",
            head=self.head,
            message=message,
            kernel_state=KernelState.IDLE,
            execution_count=0,
        )

    async def variables(self) -> KernelVariables:
        kernel = self.book.status.kernel
        state = kernel.state if kernel is not None else None
        if state == KernelState.DEAD:
            raise conflict("the session's kernel died: restart it first")
        try:
            found, truncated = await user_variables(self.lease.connection)
        except VariablesUnavailable as exc:
            raise OperationError(
                503, "ServiceUnavailable", f"the kernel's variables are not readable: {exc}"
            ) from None
        return KernelVariables(
            variables=[Variable.model_validate(v) for v in found],
            truncated=truncated,
            execution_count=self.book.status.execution_count,
            kernel_state=state,
        )


def _notebook_bytes(notebook: NotebookNode) -> bytes:
    """The notebook as committed. Not schema-validated on every change (it costs more than the rest of
    a small execution): the edits build nbformat 4.5 cells and the engine keeps only valid outputs."""
    return (nbjson.writes(notebook) + "\n").encode("utf-8")


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False
