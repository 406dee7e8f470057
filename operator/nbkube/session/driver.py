"""Drives one NotebookSession from its creation to its end.

One kopf daemon per session: it builds the starting notebook and its branch, takes a kernel of the
environment (kernelwork/kernels.py), sets it up silently, says Ready, then serves the session's
operations one at a time in the order they came, until the session is deleted, idle for its idle
timeout or past its lifetime. When the operator itself stops, the kernel is left running and the
status and journal say where the session was: the next operator reattaches, completes an execution
that was in flight (nothing lost, nothing run twice) and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import kopf
import nbformat
from pydantic import ValidationError

from nbkube.api import Reason
from nbkube.api.common import now_rfc3339, parse_timestamp, validation_message
from nbkube.api.session import KernelState, NotebookSessionSpec, SessionKernel, SessionState
from nbkube.api.sessionops import EditRequest, ExecuteRequest
from nbkube.config import Settings
from nbkube.engine import inject_parameters
from nbkube.engine import setup as kernel_setup
from nbkube.kernels import KernelLease, KernelRegistry
from nbkube.kernelwork import environments
from nbkube.kernelwork.failures import Failure, Failures
from nbkube.kernelwork.journal import WorkJournal
from nbkube.kernelwork.journaled import apply_setup
from nbkube.kernelwork.kernelsource import KernelSource
from nbkube.kernelwork.stops import StopCause, Stopped, Stops
from nbkube.kube import Kube
from nbkube.run import inputs
from nbkube.run.commit import RunStore
from nbkube.session import history
from nbkube.session.book import SessionBook
from nbkube.session.document import SessionDocument
from nbkube.session.start import starting_notebook
from nbkube.session.work import KernelReplacer, OperationError, SessionStore, SessionWork

log = logging.getLogger(__name__)

INPUT_WAIT_SECONDS = 30.0
SETUP_ATTEMPT = 0  # the journal's attempt number of the session's setup (operations count from 1)


@dataclass(frozen=True)
class SessionContext:
    kube: Kube
    settings: Settings
    registry: KernelRegistry
    store: SessionStore
    files: RunStore  # reads input files from the namespace's repository


@dataclass
class Operation:
    """One request of a caller, queued: its events stream to the caller, its result ends them."""

    kind: str  # "edit", "execute", "restart", "state"
    request: Any = None
    events: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    result: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def emit(self, event: dict[str, Any]) -> None:
        self.events.put_nowait(event)

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        if not self.result.done():
            if error is not None:
                self.result.set_exception(error)
            else:
                self.result.set_result(result)
        self.events.put_nowait(None)


class SessionDriver:
    def __init__(self, ctx: SessionContext, body: kopf.Body, stopped: Stopped) -> None:
        self.ctx = ctx
        self.body = body
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.book = SessionBook(ctx.kube, body, ctx.settings.status_interval_seconds)
        self.failures = Failures(f"{self.namespace}/{self.name}")
        self.stops = Stops(stopped, self.failures)
        self.journal = WorkJournal(ctx.settings.journal_dir, self.uid)
        self.queue: asyncio.Queue[Operation] = asyncio.Queue()
        self.work: SessionWork | None = None
        self.ready = asyncio.Event()

    @property
    def status(self) -> Any:
        return self.book.status

    async def drive(self) -> None:
        try:
            spec = NotebookSessionSpec.model_validate(dict(self.body.get("spec") or {}))
        except ValidationError as exc:
            await self.book.end(Reason.INVALID_SPEC, validation_message(exc))
            return
        if self.status.state == SessionState.ENDED:
            return
        if self.status.start_time is None:
            self.status.start_time = now_rfc3339()
            self.book.touch()
        try:
            started = await self._start(spec)
            if isinstance(started, Failure):
                await self._end(started.reason, started.message)
                return
            if started is None:
                return  # the operator is stopping (or the session is deleted)
            self.work = started
            self.ready.set()
            await self._serve(spec, started)
        finally:
            self.stops.close()
            self._refuse_waiting("the session is not running any more")

    # -- start ---------------------------------------------------------------------------------------

    async def _start(self, spec: NotebookSessionSpec) -> SessionWork | Failure | None:
        ref = spec.environment_ref
        foreign = environments.foreign_environment("NotebookSession", self.namespace, ref.namespace, ref.name)
        if foreign is not None:
            return foreign
        env_spec = await environments.environment_spec(self.ctx.kube, self.namespace, ref.name)
        if isinstance(env_spec, Failure):
            return env_spec
        kernels = KernelSource(
            self.ctx.registry,
            self.namespace,
            ref.name,
            wait_seconds=self.ctx.settings.environment_wait_seconds,
            not_ready_detail=lambda: environments.not_ready_detail(self.ctx.kube, self.namespace, ref.name),
        )
        if self.status.kernel is not None and self.status.head is not None:
            return await self._reattach(spec, kernels)
        start = await starting_notebook(
            self.ctx.kube, self.ctx.store, self.namespace, spec.notebook, env_spec.kernel_name
        )
        if isinstance(start, Failure):
            return start
        notebook = start.notebook
        if spec.parameters:
            try:
                notebook = inject_parameters(notebook, spec.parameters, kernel_name=env_spec.kernel_name)
            except Exception as exc:
                return Failure(Reason.INVALID_SPEC, f"parameters cannot be injected: {exc}")
        try:
            document = SessionDocument(notebook)
        except ValueError as exc:
            return Failure(Reason.INVALID_NOTEBOOK, str(exc))
        try:
            lease = await self._fresh_kernel(spec, kernels)
        except kernel_setup.SetupFailed as exc:
            return Failure(Reason.SETUP_FAILED, str(exc)[:2000])
        except Exception as exc:
            log.exception("%s/%s: the session's kernel could not be set up", self.namespace, self.name)
            return Failure(Reason.OPERATOR_ERROR, f"the session could not start: {type(exc).__name__}: {exc}")
        if not isinstance(lease, KernelLease):
            return lease
        work = self._work(spec, document, lease, kernels)
        try:
            branch = history.branch_name(self.name, self.uid)
            self.status.branch = branch
            self.status.path = work.path
            self.status.head = await self.ctx.store.start_branch(self.namespace, branch, start.base)
            await work.commit(
                f"start session {self.name} from {start.origin}",
                {"Operation": "start", "Environment": ref.name, "Origin": start.origin},
                operation=False,
            )
        except Exception as exc:
            self.ctx.registry.release(lease)
            self.status.kernel = None
            log.exception("%s/%s: the session could not start", self.namespace, self.name)
            return Failure(Reason.OPERATOR_ERROR, f"the session could not start: {type(exc).__name__}: {exc}")
        self._set_ready(f"kernel {lease.kernel_id[:8]} on {lease.pod}; branch {self.status.branch}")
        await self.book.flush()
        kopf.info(self.body, reason=Reason.KERNEL_READY, message=self.status.message)
        return work

    async def _resolve_inputs(self, spec: NotebookSessionSpec) -> kernel_setup.KernelSetup | Failure | None:
        store = self.ctx.files

        async def read_repo(path: str, max_files: int, max_bytes: int) -> list[tuple[str, bytes]]:
            return await store.read_files(self.namespace, path, max_files=max_files, max_bytes=max_bytes)

        async def waiting(message: str) -> None:
            self.book.set_state(SessionState.PENDING, Reason.INPUT_NOT_FOUND, f"waiting: {message}")
            await self.book.flush()

        resolver = inputs.InputResolver(
            self.ctx.kube, self.namespace, read_repo, read_secrets=self.ctx.settings.read_secrets
        )
        try:
            return await inputs.resolve_waiting(
                lambda: resolver.resolve(spec, self.name),
                wait_seconds=INPUT_WAIT_SECONDS,
                on_waiting=waiting,
                stopping=lambda: bool(self.stops.stopped),
            )
        except inputs.InputProblem as problem:
            return None if self.stops.stopped else Failure(problem.reason, problem.message[:2000])

    async def _take_kernel(self, kernels: KernelSource) -> KernelLease | Failure | None:
        async def waiting(reason: str, message: str) -> None:
            self.book.set_state(SessionState.PENDING, reason, message)
            await self.book.flush()

        acquired = await kernels.acquire(self.stops, waiting)
        if isinstance(acquired, Failure) or acquired is None:
            return acquired
        self.status.kernel = SessionKernel(
            pod=acquired.pod,
            address=acquired.address,
            kernel_id=acquired.kernel_id,
            session_id=acquired.session_id,
            state=KernelState.IDLE,
        )
        acquired.before_shutdown = kernel_setup.teardown
        return acquired

    async def _fresh_kernel(
        self, spec: NotebookSessionSpec, kernels: KernelSource
    ) -> KernelLease | Failure | None:
        """A kernel taken for the session and given its setup (inputs, env, working directory)."""
        setup = await self._resolve_inputs(spec)
        if not isinstance(setup, kernel_setup.KernelSetup):
            return setup
        fresh = await self._take_kernel(kernels)
        if not isinstance(fresh, KernelLease):
            return fresh
        pending = [setup]  # given up to the kernel: its files' memory goes once they are sent
        del setup
        try:
            await apply_setup(fresh.connection, pending.pop(), self.journal, SETUP_ATTEMPT, self.failures)
        except BaseException:
            self.ctx.registry.release(fresh)
            self.status.kernel = None
            raise
        return fresh

    def _replacer(self, spec: NotebookSessionSpec, kernels: KernelSource) -> KernelReplacer:
        async def replace(gone: KernelLease) -> KernelLease | str:
            """The gateway no longer has the session's kernel (its restarter gave up after repeated
            deaths, or it was deleted): a fresh one, set up as the first was."""
            self.ctx.registry.release(gone)
            try:
                fresh = await self._fresh_kernel(spec, kernels)
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"
            if isinstance(fresh, KernelLease):
                kopf.warn(
                    self.body,
                    reason=Reason.KERNEL_RESTARTED,
                    message=f"kernel {gone.kernel_id[:8]} was gone from {gone.pod}: a fresh kernel "
                    f"{fresh.kernel_id[:8]} on {fresh.pod} (the session's variables are lost)",
                )
                return fresh
            return fresh.message if fresh is not None else "the operator is stopping"

        return replace

    def _work(
        self, spec: NotebookSessionSpec, document: SessionDocument, lease: KernelLease, kernels: KernelSource
    ) -> SessionWork:
        return SessionWork(
            book=self.book,
            journal=self.journal,
            store=self.ctx.store,
            failures=self.failures,
            document=document,
            lease=lease,
            file_name=spec.notebook.name,
            execution_timeout=spec.execution_timeout_seconds,
            replace_kernel=self._replacer(spec, kernels),
        )

    def _set_ready(self, message: str) -> None:
        self.book.set_state(SessionState.READY, Reason.KERNEL_READY, message)
        self.book.touch()

    async def _reattach(
        self, spec: NotebookSessionSpec, kernels: KernelSource
    ) -> SessionWork | Failure | None:
        """After an operator restart: the same kernel and notebook, and the execution in flight completed."""
        status = self.status
        attachment = status.kernel
        assert attachment is not None and status.branch is not None and status.path is not None
        try:
            # The branch, not status.head: a change may have landed after the last status write.
            last = await self.ctx.store.history(self.namespace, f"refs/heads/{status.branch}", limit=1)
            status.head = last[0].commit
            status.operations = history.operation_number(last[0].message)
            raw = await self.ctx.store.read_file(self.namespace, status.path, status.head)
            document = SessionDocument(nbformat.reads(raw.decode("utf-8"), as_version=4))
        except Exception as exc:
            return Failure(
                Reason.OPERATOR_ERROR, f"the session's notebook at {status.head[:12]} is unreadable: {exc}"
            )
        operation = status.operations + 1
        progress = await self.journal.progress(operation)
        in_flight = (progress.in_flight[1],) if progress.in_flight else ()
        lease = await kernels.reattach(
            attachment.pod, attachment.kernel_id, attachment.session_id, in_flight, progress.seen_msg_ids
        )
        if lease is None:
            kopf.warn(
                self.body,
                reason=Reason.KERNEL_RESTARTED,
                message=f"kernel {attachment.kernel_id[:8]} on {attachment.pod} is gone after the operator "
                "restarted: a fresh kernel (the session's variables are lost)",
            )
            status.kernel = None
            fresh = await self._fresh_kernel(spec, kernels)
            if not isinstance(fresh, KernelLease):
                return fresh
            work = self._work(spec, document, fresh, kernels)
            status.execution_count = 0
            if progress.finished:
                progress.in_flight, progress.replied = None, None
                await work.resume(operation, progress)  # what finished is kept; the cell in flight is lost
            self._set_ready(f"a fresh kernel {fresh.kernel_id[:8]} on {fresh.pod}: the previous one was gone")
            await self.book.flush()
            return work
        lease.before_shutdown = kernel_setup.teardown
        work = self._work(spec, document, lease, kernels)
        resumed = await work.resume(operation, progress)
        kopf.info(
            self.body,
            reason="Reattached",
            message=f"operator restarted: reattached to kernel {attachment.kernel_id[:8]}"
            + (f"; {resumed.message}" if resumed is not None else ""),
        )
        self._set_ready(f"kernel {lease.kernel_id[:8]} on {lease.pod}; branch {status.branch}")
        await self.book.flush()
        return work

    # -- serve ---------------------------------------------------------------------------------------

    def _deadline(self, spec: NotebookSessionSpec) -> tuple[float, str, str]:
        status = self.status
        last = parse_timestamp(status.last_activity_time) or time.time()
        idle = last + spec.idle_timeout_seconds
        deadline = (
            idle,
            Reason.IDLE_TIMEOUT,
            f"no operation for {spec.idle_timeout_seconds}s (idleTimeoutSeconds)",
        )
        if spec.max_lifetime_seconds is not None:
            started = parse_timestamp(status.start_time) or time.time()
            end = started + spec.max_lifetime_seconds
            if end < idle:
                deadline = (
                    end,
                    Reason.LIFETIME_EXCEEDED,
                    f"older than maxLifetimeSeconds={spec.max_lifetime_seconds}",
                )
        return deadline

    async def _serve(self, spec: NotebookSessionSpec, work: SessionWork) -> None:
        while True:
            at, reason, message = self._deadline(spec)
            self.stops.set_deadline(at)
            taking = asyncio.ensure_future(self.queue.get())
            cause = await self.stops.first(taking)
            if cause is not None:
                taking.cancel()
                await self._stop(cause, work, reason, message)
                return
            operation = taking.result()
            self.stops.close()  # no idle deadline while an operation runs
            performing = asyncio.ensure_future(self._perform(work, operation))
            cause = await self.stops.first(performing)
            if cause == StopCause.STOPPED:
                if self._deleted():
                    work.interrupt()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(performing), 15)
                performing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await performing
                operation.finish(
                    error=OperationError(
                        503,
                        "ServiceUnavailable",
                        "the operator is restarting: read the notebook again once the session is Ready",
                    )
                )
                await self._stop(cause, work, reason, message)
                return
            await performing

    async def _perform(self, work: SessionWork, operation: Operation) -> None:
        try:
            if operation.kind == "edit":
                assert isinstance(operation.request, EditRequest)
                result: Any = await work.edit(operation.request)
            elif operation.kind == "execute":
                assert isinstance(operation.request, ExecuteRequest)
                result = await work.execute(operation.request, operation.emit)
            elif operation.kind == "restart":
                result = await work.restart()
            elif operation.kind == "state":
                result = await work.variables()
            else:
                raise OperationError(400, "BadRequest", f"unknown operation {operation.kind!r}")
        except OperationError as exc:
            operation.finish(error=exc)
        except Exception as exc:
            log.exception("%s/%s: %s failed", self.namespace, self.name, operation.kind)
            operation.finish(error=OperationError(500, "InternalError", f"{operation.kind} failed: {exc}"))
        else:
            operation.finish(result)
        finally:
            self.book.touch()
            self.book.publish()

    async def _stop(self, cause: StopCause, work: SessionWork, reason: str, message: str) -> None:
        lease = work.lease
        if cause == StopCause.STOPPED and not self._deleted():
            # The operator is exiting: the kernel stays for the next operator.
            with contextlib.suppress(Exception):
                await lease.connection.close()
            await self.book.flush()
            return
        self.ctx.registry.release(lease)
        await self.journal.remove()
        if self._deleted():
            return
        await self._end(reason, message)

    async def _end(self, reason: str, message: str) -> None:
        await self.book.end(reason, message)

    def _refuse_waiting(self, message: str) -> None:
        while not self.queue.empty():
            self.queue.get_nowait().finish(error=OperationError(409, "Conflict", message))

    def _deleted(self) -> bool:
        return bool(self.body["metadata"].get("deletionTimestamp"))

    # -- operations from callers --------------------------------------------------------------------

    def submit(self, kind: str, request: Any = None) -> Operation:
        if self.status.state == SessionState.ENDED:
            raise OperationError(409, "Conflict", f"session {self.name} has ended: {self.status.reason}")
        operation = Operation(kind, request)
        self.queue.put_nowait(operation)
        return operation

    def interrupt(self) -> bool:
        """Interrupts the execution running now, ahead of the queue; False when none runs."""
        return self.work.interrupt() if self.work is not None else False
