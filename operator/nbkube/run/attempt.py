"""One attempt of a run: a kernel (reattached after an operator restart, or freshly taken), the
run's setup, the cells executed with journaling and raced against the run's stops, the kernel
released (or, when the operator is stopping, left running for the next one)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import kopf
import nbformat
from nbformat import NotebookNode

from nbkube.api import KernelAttachment, NotebookRunSpec, Reason, RunState
from nbkube.api.states import CellState
from nbkube.engine import (
    CellResult,
    ExecutionLost,
    GatewayUnavailable,
    NotebookResult,
    OutputLimits,
    ResumePoint,
    bounded_outputs,
)
from nbkube.engine import setup as kernel_setup
from nbkube.kernels import KernelLease
from nbkube.kernelwork.failures import Failure, Failures
from nbkube.kernelwork.journal import WorkJournal
from nbkube.kernelwork.journaled import apply_setup, journaled_executor, open_journal
from nbkube.kernelwork.kernelsource import KernelSource
from nbkube.kernelwork.stops import StopCause, Stops
from nbkube.results.store import DEFAULT_MAX_SPILL_BYTES
from nbkube.run import outcome as outcomes
from nbkube.run.commit import RunCommitter
from nbkube.run.outcome import Outcome, cancelled, failed
from nbkube.run.progress import ProgressBook

log = logging.getLogger(__name__)

# How long a cancelled execution may take to interrupt its cell and end.
CANCEL_GRACE_SECONDS = 15.0
MAX_MESSAGE_CHARS = 2000

# The run's input files and env for the kernel; how the run ends instead; None when it stops. Its
# argument, when given, is awaited when the inputs first have to wait for an object to appear.
OnInputsWaiting = Callable[[], Awaitable[None]]
ResolveInputs = Callable[[OnInputsWaiting | None], Awaitable[kernel_setup.KernelSetup | Outcome | None]]


@dataclass
class AttemptResult:
    outcome: Outcome | None  # None: the operator is stopping, the run goes on after the restart
    executed: NotebookNode  # the notebook as this attempt left it
    spill: Path | None = None  # the full outputs of its truncated cells
    began: bool = True  # False: it ended before it had a kernel (bad input): there is nothing to commit


class Attempt:
    def __init__(
        self,
        spec: NotebookRunSpec,
        book: ProgressBook,
        stops: Stops,
        journal: WorkJournal,
        kernels: KernelSource,
        committer: RunCommitter,
        resolve_inputs: ResolveInputs,
        *,
        deleted: Callable[[], bool],
    ) -> None:
        self.spec = spec
        self.book = book
        self.stops = stops
        self.failures: Failures = stops.failures
        self.journal = journal
        self.kernels = kernels
        self.committer = committer
        self._resolve_inputs = resolve_inputs
        # Held until it is sent, then dropped: a run does not keep its inputs in memory.
        self._setup: kernel_setup.KernelSetup | None = None
        self._deleted = deleted
        self._setup_needed = True  # the kernel lacks the run's setup (files, env, working directory)
        self._journal_ran = False  # the journal of this attempt holds cells that ran (see _reattach)

    async def run(self, notebook: NotebookNode) -> AttemptResult:
        spec, status = self.spec, self.book.status
        executed = nbformat.from_dict(notebook)
        lease: KernelLease | None = None
        start_index = 0
        resume: ResumePoint | None = None
        if status.kernel is not None and status.state == RunState.RUNNING:
            lease, start_index, resume = await self._reattach(executed)
            if lease is None and self._journal_ran and status.attempt > spec.retries:
                # Starting over would run again cells the journal says ran, and no retry is left:
                # the run ends with what the journal kept.
                status.kernel = None
                message = (
                    f"the kernel of attempt {status.attempt} is gone after the operator restarted, "
                    f"and spec.retries={spec.retries} allows no fresh attempt"
                )
                return AttemptResult(failed(Reason.KERNEL_DIED, message), executed)
            if lease is None:
                executed = nbformat.from_dict(notebook)
                self.book.init_cells(executed)
        if lease is None and self._setup is None:
            # The inputs are read while a kernel is taken. Bad input still ends the run before the kernel
            # is used (it is released untouched) and before the attempt counts.
            # Inputs that have to wait for an object to appear do so without holding a kernel.
            taking: asyncio.Task[KernelLease | Failure | None] | None = asyncio.create_task(self._take())

            async def inputs_waiting() -> None:
                nonlocal taking
                if taking is not None:
                    await self._abandon(taking)
                    taking = None

            resolved: kernel_setup.KernelSetup | Outcome | None = None
            try:
                resolved = await self._resolve_inputs(inputs_waiting)
            finally:
                if not isinstance(resolved, kernel_setup.KernelSetup):
                    await inputs_waiting()
            if not isinstance(resolved, kernel_setup.KernelSetup):
                return AttemptResult(resolved, executed, began=False)
            self._setup = resolved
            if taking is not None:
                acquired = await self._attach(await taking)
                if acquired is None or isinstance(acquired, Outcome):
                    return AttemptResult(acquired, executed)
                lease = acquired
        elif self._setup is None and self._setup_needed:
            assert lease is not None
            resolved = await self._resolve_inputs(None)
            if not isinstance(resolved, kernel_setup.KernelSetup):
                if resolved is None:  # stopping: the next operator goes on
                    with contextlib.suppress(Exception):
                        await lease.connection.close()
                else:  # nothing half-started: the kernel goes
                    self.kernels.registry.release(lease)
                    status.kernel = None
                return AttemptResult(resolved, executed)
            self._setup = resolved
        if lease is None:
            acquired = await self._attach(await self._take())
            if acquired is None or isinstance(acquired, Outcome):
                return AttemptResult(acquired, executed)
            lease = acquired
        lease.before_shutdown = kernel_setup.teardown  # removes the working directory before shutdown
        release = True
        try:
            outcome, spill = await self._execute(lease, executed, start_index, resume)
            if outcome is None:
                release = False
            return AttemptResult(outcome, executed, spill)
        finally:
            if release:
                self.kernels.registry.release(lease)
            else:
                with contextlib.suppress(Exception):
                    await lease.connection.close()

    async def _waiting(self, reason: str, message: str) -> None:
        self.book.set_progress(RunState.PENDING, reason, message)
        await self.book.flush()

    async def _take(self) -> KernelLease | Failure | None:
        """A fresh kernel (not yet this attempt's), a failure, or None when a stop came first."""
        return await self.kernels.acquire(self.stops, self._waiting)

    async def _abandon(self, taking: asyncio.Task[KernelLease | Failure | None]) -> None:
        """The kernel being taken is not wanted after all: it is released, untouched."""
        if not taking.done():
            taking.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            lease = await taking
            if isinstance(lease, KernelLease):
                self.kernels.registry.release(lease)

    async def _attach(self, acquired: KernelLease | Failure | None) -> KernelLease | Outcome | None:
        """The kernel taken becomes this attempt's (counted, in the status, an event); or how the run
        ends; or None when the operator is stopping."""
        status = self.book.status
        if acquired is None:
            cause = self.stops.pending()
            if cause is None:
                return None
            status.attempt += 1
            return outcomes.stopped_by(cause)
        if isinstance(acquired, Failure):
            status.attempt += 1  # a failed acquisition counts against spec.retries
            return outcomes.from_failure(acquired)
        status.attempt += 1
        status.kernel = KernelAttachment(
            pod=acquired.pod,
            address=acquired.address,
            kernel_id=acquired.kernel_id,
            session_id=acquired.session_id,
        )
        self.book.set_progress(
            RunState.RUNNING, Reason.RUNNING, f"attempt {status.attempt} on {acquired.pod}"
        )
        await self.book.flush()
        kopf.info(
            self.book.body,
            reason="Started",
            message=f"attempt {status.attempt}: kernel {acquired.kernel_id[:8]} on gateway pod "
            f"{acquired.pod}",
        )
        return acquired

    async def _reattach(self, executed: NotebookNode) -> tuple[KernelLease | None, int, ResumePoint | None]:
        """After an operator restart: the same kernel and session, from where the journal says we were."""
        book = self.book
        attachment = book.status.kernel
        assert attachment is not None
        progress = await self.journal.progress(book.status.attempt)
        finished, in_flight = progress.finished, progress.in_flight
        self._setup_needed = not progress.setup_done
        lease = await self.kernels.reattach(
            attachment.pod,
            attachment.kernel_id,
            attachment.session_id,
            (in_flight[1],) if in_flight else (),
            progress.seen_msg_ids,
        )
        for index, cell in finished.items():
            if index < len(executed.cells):
                executed.cells[index] = nbformat.from_dict(cell)
                book.mark_from_cell(index, executed.cells[index])
        if lease is None:
            kopf.warn(
                book.body,
                reason=Reason.KERNEL_DIED,
                message=f"kernel {attachment.kernel_id[:8]} on {attachment.pod} "
                "is gone after the operator restarted",
            )
            # What ran stays in `executed` (and the status) for a run that ends here; a fresh attempt
            # starts from a clean copy.
            self._journal_ran = bool(finished or in_flight)
            return None, 0, None
        if progress.replied is not None:
            # It replied ok before the next cell was sent: done, with the outputs the journal has.
            index, outputs = progress.replied
            cell = executed.cells[index]
            cell.outputs = await bounded_outputs(outputs, OutputLimits())
            cell.setdefault("metadata", {})["nbkube"] = {"state": CellState.SUCCEEDED.value, "resumed": True}
            book.mark_from_cell(index, cell, CellState.SUCCEEDED)
            finished = {**finished, index: dict(cell)}
        start = max(finished) + 1 if finished else 0
        resume = None
        if in_flight and in_flight[0] >= start:
            # What of the cell reached the dead operator is not replayed: the engine takes it first.
            resume = ResumePoint(in_flight[0], in_flight[1], tuple(progress.partial_outputs))
            start = resume.index
        kopf.info(
            book.body,
            reason="Reattached",
            message=f"operator restarted: reattached to kernel {attachment.kernel_id[:8]} at cell {start}",
        )
        return lease, start, resume

    def _take_setup(self) -> kernel_setup.KernelSetup:
        setup, self._setup = self._setup, None
        assert setup is not None
        return setup

    async def _execute(
        self, lease: KernelLease, notebook: NotebookNode, start_index: int, resume: ResumePoint | None
    ) -> tuple[Outcome | None, Path | None]:
        book, failures, spec = self.book, self.failures, self.spec
        attachment = book.status.kernel
        assert attachment is not None
        attempt = book.status.attempt
        if not await open_journal(self.journal, failures):
            assert failures.first is not None
            return outcomes.from_failure(failures.first), None

        def on_started(index: int, msg_id: str) -> None:
            with failures.guard(Reason.STATUS_NOT_UPDATED, f"the status of cell {index}"):
                attachment.cell_index = index
                attachment.msg_id = msg_id
                book.cell_running(index)
                book.publish()

        def on_finished(index: int, cell: NotebookNode, result: CellResult) -> None:
            with failures.guard(Reason.STATUS_NOT_UPDATED, f"the status of cell {index}"):
                book.mark_from_cell(index, cell, result.state)
                book.publish()
            with failures.guard(Reason.RESULTS_NOT_COMMITTED, f"the checkpoint after cell {index}"):
                self.committer.maybe_checkpoint(notebook, failures)

        executor = journaled_executor(
            lease.connection,
            notebook,
            self.journal,
            attempt,
            failures,
            on_started=on_started,
            on_finished=on_finished,
            # The engine spills no more than the store keeps per run.
            limits=OutputLimits(spill_dir=self.journal.spill_dir, spill_bytes=DEFAULT_MAX_SPILL_BYTES),
            cell_timeout=spec.timeouts.cell_seconds,
            allow_errors=spec.allow_errors,
        )

        async def execute() -> NotebookResult:
            if self._setup is not None:
                await apply_setup(lease.connection, self._take_setup(), self.journal, attempt, failures)
                self._setup_needed = False
            return await executor.execute_notebook(notebook, resume=resume, start_index=start_index)

        execution = asyncio.create_task(execute())
        try:
            cause = await self.stops.first(execution, failures=True)
            if cause is not None:
                if cause == StopCause.FAILURE and self.stops.stopped and not self._deleted():
                    cause = StopCause.STOPPED
                if cause == StopCause.STOPPED and not self._deleted():
                    # The operator is exiting: leave the kernel running for the next operator.
                    execution.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await execution
                    await book.flush()
                    return None, None
                executor.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(execution), CANCEL_GRACE_SECONDS)
                if not execution.done():
                    execution.cancel()
                return outcomes.stopped_by(cause, failures.first) or cancelled(), None
            result = execution.result()
        except kernel_setup.SetupFailed as exc:
            return failed(Reason.SETUP_FAILED, str(exc)[:MAX_MESSAGE_CHARS]), None
        except GatewayUnavailable as exc:
            return failed(Reason.GATEWAY_LOST, f"gateway pod {lease.pod} was lost: {exc}"), None
        except ExecutionLost as exc:
            return failed(Reason.KERNEL_DIED, str(exc)), None
        except Exception as exc:  # an error of ours: it ends this run, with a word, not the daemon
            log.exception("execution of %s/%s failed", book.namespace, book.name)
            message = f"the execution failed: {type(exc).__name__}: {exc}"
            return failed(Reason.OPERATOR_ERROR, message[:MAX_MESSAGE_CHARS]), None
        finally:
            if not execution.done():
                execution.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await execution
        if failures.first is not None:  # e.g. the journal of the last cell, or its checkpoint
            return outcomes.from_failure(failures.first), result.spill_path
        failed_cell = book.cell(result.failed_index or 0) if result.state != CellState.SUCCEEDED else None
        executed_cells = book.cells_executed()
        return (
            outcomes.of_execution(result.state, failed_cell, executed_cells, spec.timeouts.cell_seconds),
            result.spill_path,
        )
