"""Drives one NotebookRun from Pending to a terminal state.

One kopf daemon per active run calls RunService.drive(). The run acquires a kernel from its
environment's gateway pods, executes the cells through the engine, keeps a journal of finished
cells on the results volume, writes coalesced status, commits the executed notebook, and releases
the kernel. When the operator itself is stopped, the kernel is left running and the journal says
where the run was, so the next operator reattaches instead of starting over.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import nbformat
from nbformat import NotebookNode
from pydantic import ValidationError

from nbkube import API_VERSION, memory
from nbkube.api import (
    TERMINAL_RUN_STATES,
    CellStatus,
    ConditionStatus,
    KernelAttachment,
    NotebookEnvironmentSpec,
    NotebookRunSpec,
    NotebookRunStatus,
    Reason,
    RunResult,
    RunState,
)
from nbkube.api.common import now_rfc3339, parse_timestamp, set_condition, validation_message
from nbkube.api.states import NOT_RUN_CELL_STATES
from nbkube.config import Settings
from nbkube.engine import (
    CellResult,
    CellState,
    EngineError,
    ExecutionLost,
    GatewayUnavailable,
    KernelLimitReached,
    KernelNotFound,
    NotebookExecutor,
    NotebookResult,
    OutputLimits,
    ResumePoint,
    bounded_outputs,
    inject_parameters,
    upgrade_notebook,
)
from nbkube.engine import setup as kernel_setup
from nbkube.kernels import GatewaysAtCapacity, KernelLease, KernelRegistry, NoGatewayAvailable
from nbkube.kube import Kube, NotFound, resource_path
from nbkube.metrics import cell_duration, reconcile_total, status_patches
from nbkube.metrics import runs as runs_gauge
from nbkube.results.checkpoint import CheckpointPolicy
from nbkube.results.store import DEFAULT_MAX_SPILL_BYTES
from nbkube.run import cellstatus, inputs, source
from nbkube.run.journal import RunJournal
from nbkube.run.outcome import Outcome, cancelled, failed, succeeded
from nbkube.run.statuswriter import StatusWriter
from nbkube.run.sweepdriver import drive_sweep

log = logging.getLogger(__name__)

NOTEBOOK_WAIT_SECONDS = 30.0
JOURNAL_GRACE_SECONDS = 30.0
KERNEL_WAIT_FIRST_DELAY = 0.5
KERNEL_WAIT_MAX_DELAY = 5.0


def run_path(namespace: str, name: str, sub: str | None = None) -> str:
    return resource_path(API_VERSION, "notebookruns", namespace, name, sub)


class RunService:
    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        registry: KernelRegistry,
        results: Any,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.registry = registry
        self.results = results
        self.active: dict[str, RunDriver] = {}
        self._states: dict[str, str] = {}
        self._held_kernels: dict[str, str] = {}
        self._counts: dict[str, int] = dict.fromkeys([s.value for s in RunState], 0)
        self._cleanups: set[asyncio.Task[None]] = set()

    async def drive(self, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
        uid = body["metadata"]["uid"]
        driver = RunDriver(self, body, stopped)
        self.active[uid] = driver
        try:
            await driver.drive()
        finally:
            self.active.pop(uid, None)
            if driver.status.state in TERMINAL_RUN_STATES:
                reconcile_total.labels("notebookrun", str(driver.status.state)).inc()

    def remove_later(self, journal: RunJournal, delay: float = JOURNAL_GRACE_SECONDS) -> None:
        async def remove() -> None:
            await asyncio.sleep(delay)
            await journal.remove()

        task = asyncio.create_task(remove())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """Keeps nbkube_runs{state} current from the watch stream."""
        uid = (body.get("metadata") or {}).get("uid")
        if not uid:
            return
        previous = self._states.pop(uid, None)
        if previous is not None:
            self._counts[previous] -= 1
        self._held_kernels.pop(uid, None)
        if event_type != "DELETED":
            status = body.get("status") or {}
            state = status.get("state") or RunState.PENDING
            self._states[uid] = state
            kernel_id = (status.get("kernel") or {}).get("kernelId")
            if kernel_id and state not in TERMINAL_RUN_STATES:
                self._held_kernels[uid] = kernel_id
            self._counts[state] = self._counts.get(state, 0) + 1
            driver = self.active.get(uid)
            if driver is not None and (body.get("spec") or {}).get("cancel"):
                driver.cancel_requested.set()  # from the watch stream: no per-run polling
        for state, count in self._counts.items():
            runs_gauge.labels(state).set(count)

    def is_active(self, uid: str) -> bool | None:
        """Whether a run is not finished: None when the watch never reported it (deleted)."""
        if uid in self.active:
            return True
        state = self._states.get(uid)
        return None if state is None else state not in TERMINAL_RUN_STATES

    def held_kernels(self) -> set[str]:
        """Kernels that unfinished runs hold (as their status says), including runs waiting to be
        reattached after an operator restart."""
        return set(self._held_kernels.values())

    async def expire_if_due(self, body: kopf.Body, within: float) -> None:
        """Deletes a finished run once its TTL has passed. A run due within the next `within` seconds (the
        timer's interval) is waited for here, so it goes on time rather than up to one interval late."""
        spec = body.get("spec") or {}
        remaining = ttl_remaining(spec, body.get("status") or {}, time.time())
        if remaining is None or remaining > within:
            return
        if remaining > 0:
            await asyncio.sleep(remaining)
        meta = body["metadata"]
        ttl = spec["ttlSecondsAfterFinished"]
        kopf.info(body, reason="Expired", message=f"deleted {ttl}s after it finished")
        await self.kube.delete(run_path(meta["namespace"], meta["name"]))


def ttl_remaining(spec: dict[str, Any], status: dict[str, Any], now: float) -> float | None:
    """Seconds until a finished run's ttlSecondsAfterFinished has passed (≤ 0: due now); None when it
    has no TTL or has not finished."""
    ttl = spec.get("ttlSecondsAfterFinished")
    finished = parse_timestamp(status.get("completionTime"))
    if ttl is None or finished is None:
        return None
    return finished + ttl - now


class RunDriver:
    def __init__(self, service: RunService, body: kopf.Body, stopped: kopf.DaemonStopped) -> None:
        self.service = service
        self.kube = service.kube
        self.settings = service.settings
        self.body = body
        self.stopped = stopped
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.status = NotebookRunStatus.model_validate(dict(body.get("status") or {}))
        self.writer = StatusWriter(self._patch_status, self.settings.status_interval_seconds)
        self.journal = RunJournal(self.settings.journal_dir, self.uid)
        self.cancel_requested = asyncio.Event()
        self.deadline_passed = asyncio.Event()
        self._spill: Path | None = None
        self._checkpoints = CheckpointPolicy(
            every_cells=self.settings.checkpoint_every_cells,
            every_seconds=self.settings.checkpoint_every_seconds,
        )
        self._checkpoint_task: asyncio.Task[None] | None = None
        # An error in a callback of the executor (journal, status, checkpoint) ends the run with this
        # outcome: it is never raised into the engine, where it would end the daemon without a word.
        self._callback_failure: Outcome | None = None
        self._callback_failed = asyncio.Event()
        self._journal_ran = False  # the journal of this attempt holds cells that ran (see _reattach)
        self._setup_needed = True  # the kernel lacks the run's setup (files, env, working directory)
        self._first_setup: kernel_setup.KernelSetup | None = None
        self._pending_setup: kernel_setup.KernelSetup | None = None

    # status plumbing

    async def _patch_status(self, status: dict[str, Any]) -> None:
        if "kernel" not in status:
            status["kernel"] = None  # merge patch: absent means "keep", None means "remove"
        status_patches.inc()
        try:
            await self.kube.merge_patch(run_path(self.namespace, self.name, "status"), {"status": status})
        except Exception as exc:  # the next flush carries the newest status anyway
            log.warning("status patch of %s/%s failed: %s", self.namespace, self.name, exc)

    def _publish(self) -> None:
        self.writer.update(self.status.to_api)

    async def _flush(self) -> None:
        await self.writer.flush(self.status.to_api())

    def _set_progress(self, state: RunState, reason: str, message: str) -> None:
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
        succeeded_status = {
            RunState.SUCCEEDED: ConditionStatus.TRUE,
            RunState.FAILED: ConditionStatus.FALSE,
            RunState.CANCELLED: ConditionStatus.FALSE,
        }.get(state, ConditionStatus.UNKNOWN)
        st.conditions = set_condition(
            st.conditions, "Succeeded", succeeded_status, reason, message, self.generation
        )
        self._touch_duration()

    def _touch_duration(self) -> None:
        started = parse_timestamp(self.status.start_time)
        if started is not None:
            end = parse_timestamp(self.status.completion_time) or time.time()
            self.status.duration = cellstatus.format_duration(end - started)

    async def _finish(self, outcome: Outcome) -> None:
        self.status.completion_time = now_rfc3339()
        self.status.kernel = None
        self._set_progress(outcome.state, outcome.reason, outcome.message)
        # Events first: once the terminal status lands, kopf stops this daemon.
        if outcome.state == RunState.SUCCEEDED:
            kopf.info(self.body, reason=outcome.reason, message=outcome.message)
        else:
            kopf.warn(self.body, reason=outcome.reason, message=outcome.message)
        self.writer.discard()
        # The terminal status must land: nothing drives this run again until the operator restarts.
        status = self.status.to_api()
        status["kernel"] = None
        async with self.writer.lock:  # no older patch may land after this one
            for attempt in range(12):
                try:
                    path = run_path(self.namespace, self.name, "status")
                    await self.kube.merge_patch(path, {"status": status})
                    status_patches.inc()
                    return
                except NotFound:
                    return
                except Exception as exc:
                    log.warning("final status of %s/%s not written yet: %s", self.namespace, self.name, exc)
                    await asyncio.sleep(min(2**attempt, 15))

    # the run

    async def drive(self) -> None:
        try:
            spec = NotebookRunSpec.model_validate(dict(self.body.get("spec") or {}))
        except ValidationError as exc:
            await self._finish(failed(Reason.INVALID_SPEC, validation_message(exc)))
            return
        if self.status.start_time is None:
            self.status.start_time = now_rfc3339()
        if spec.is_sweep():
            await drive_sweep(self, spec)
            return
        if spec.cancel:
            self.cancel_requested.set()
        watchers = [asyncio.create_task(self._watch_deadline(spec))]
        try:
            outcome = await self._run(spec)
        finally:
            for task in watchers:
                task.cancel()
        if outcome is not None:
            await self._finish(outcome)

    async def _watch_deadline(self, spec: NotebookRunSpec) -> None:
        if spec.timeouts.run_seconds is None:
            return
        started = parse_timestamp(self.status.start_time) or time.time()
        await asyncio.sleep(max(0.0, started + spec.timeouts.run_seconds - time.time()))
        self.deadline_passed.set()

    def _interrupted(self) -> Outcome | None:
        if self.cancel_requested.is_set():
            return cancelled()
        if self.deadline_passed.is_set():
            return failed(Reason.DEADLINE_EXCEEDED, "the run's deadline (timeouts.runSeconds) passed")
        return None

    async def _run(self, spec: NotebookRunSpec) -> Outcome | None:
        ref = spec.environment_ref
        if ref.namespace and ref.namespace != self.namespace:
            return failed(
                Reason.ENVIRONMENT_NOT_ALLOWED,
                f"environment {ref.namespace}/{ref.name} is in another namespace: "
                f"a NotebookRun may only use environments in its own namespace ({self.namespace})",
            )
        if (early := self._interrupted()) is not None:
            return early
        env_body = await self.kube.get_or_none(
            resource_path(API_VERSION, "notebookenvironments", self.namespace, ref.name)
        )
        if env_body is None:
            return failed(
                Reason.ENVIRONMENT_NOT_FOUND, f"NotebookEnvironment {self.namespace}/{ref.name} not found"
            )
        try:
            env_spec = NotebookEnvironmentSpec.model_validate(env_body.get("spec") or {})
        except ValidationError as exc:
            return failed(
                Reason.ENVIRONMENT_NOT_FOUND, f"environment {ref.name} is invalid: {exc.errors()[0]['msg']}"
            )
        notebook = await self._load_notebook(spec, env_spec)
        if isinstance(notebook, Outcome):
            return notebook
        if spec.parameters:
            try:
                notebook = inject_parameters(notebook, spec.parameters, kernel_name=env_spec.kernel_name)
            except Exception as exc:
                return failed(Reason.INVALID_SPEC, f"parameters cannot be injected: {exc}")
        notebook = upgrade_notebook(notebook)
        self._init_cells(notebook)
        if self.status.kernel is None or self.status.state != RunState.RUNNING:
            # Bad input ends the run here, before a kernel is taken (a reattached kernel has them already).
            first = await self._resolve_inputs(spec)
            if not isinstance(first, kernel_setup.KernelSetup):
                return first
            self._first_setup = first

        while True:
            if (early := self._interrupted()) is not None:
                return await self._commit(spec, env_spec, notebook, early)
            outcome, executed = await self._attempt(spec, env_spec, notebook)
            if outcome is None:  # the operator is stopping; the run goes on after restart
                return None
            if (
                outcome.retryable
                and self.status.attempt <= spec.retries
                and self._interrupted() is None
                and self._callback_failure is None
            ):
                kopf.warn(
                    self.body,
                    reason=Reason.RETRYING,
                    message=f"attempt {self.status.attempt} failed ({outcome.reason}: {outcome.message}); "
                    f"retrying with a fresh kernel from the first cell",
                )
                self.status.kernel = None
                self._init_cells(notebook)
                self._set_progress(RunState.RUNNING, Reason.RETRYING, outcome.message)
                await self._flush()
                continue
            return await self._commit(spec, env_spec, executed, outcome)

    async def _load_notebook(
        self, spec: NotebookRunSpec, env_spec: NotebookEnvironmentSpec
    ) -> NotebookNode | Outcome:
        deadline = time.monotonic() + NOTEBOOK_WAIT_SECONDS
        waited = False
        while True:
            try:
                return await source.load(
                    self.kube, self.namespace, spec.notebook, env_spec.kernel_name, self._read_repo
                )
            except source.InvalidNotebook as exc:
                return failed(Reason.INVALID_NOTEBOOK, str(exc))
            except source.NotebookUnavailable as exc:
                # A ConfigMap applied together with the run may arrive a moment later; the
                # repository is ours, so a missing path there is final.
                if spec.notebook.repo_path is not None or time.monotonic() >= deadline or self.stopped:
                    return failed(Reason.NOTEBOOK_NOT_FOUND, str(exc))
                if not waited:
                    waited = True
                    self._set_progress(RunState.PENDING, Reason.NOTEBOOK_NOT_FOUND, f"waiting: {exc}")
                    await self._flush()
                await asyncio.sleep(1.0)

    async def _resolve_inputs(self, spec: NotebookRunSpec) -> kernel_setup.KernelSetup | Outcome | None:
        """The run's input files and env (run/inputs.py), or how the run ends; None when the operator
        stops."""
        results = self.service.results

        async def read_repo(path: str, max_files: int, max_bytes: int) -> list[tuple[str, bytes]]:
            return await results.read_files(self.namespace, path, max_files=max_files, max_bytes=max_bytes)

        async def waiting(message: str) -> None:
            self._set_progress(RunState.PENDING, Reason.INPUT_NOT_FOUND, f"waiting: {message}")
            await self._flush()

        resolver = inputs.InputResolver(
            self.kube,
            self.namespace,
            read_repo if results is not None else None,
            read_secrets=self.settings.read_secrets,
        )
        try:
            return await inputs.resolve_waiting(
                lambda: resolver.resolve(spec, self.name),
                wait_seconds=NOTEBOOK_WAIT_SECONDS,
                on_waiting=waiting,
                stopping=lambda: bool(self.stopped),
            )
        except inputs.InputProblem as problem:
            return None if self.stopped else failed(problem.reason, problem.message[:2000])

    async def _read_repo(self, path: str) -> bytes | None:
        """`notebook.repoPath` is read from this namespace's repository only: a path of another
        namespace is "not found" whether or not it exists there (that repository is never opened)."""
        if self.service.results is None or not path.startswith(f"{self.namespace}/"):
            return None
        try:
            return await self.service.results.read_file(self.namespace, path)
        except (FileNotFoundError, ValueError):
            return None

    def _init_cells(self, notebook: NotebookNode) -> None:
        cells = [
            CellStatus(
                index=i,
                id=str(cell.get("id", f"cell-{i}")),
                state=CellState.PENDING if cell.get("cell_type") == "code" else CellState.SKIPPED,
            )
            for i, cell in enumerate(notebook.cells)
        ]
        self._all_cells = cells
        self.status.cells_total = len(cells)
        self.status.cells_done = 0
        self._refresh_cells()

    def _refresh_cells(self) -> None:
        done = sum(1 for c in self._all_cells if c.state not in (CellState.PENDING, CellState.RUNNING))
        self.status.cells_done = done
        self.status.progress = f"{done}/{len(self._all_cells)}"
        kept, omitted = cellstatus.bound_cells(self._all_cells)
        self.status.cells = kept
        self.status.cells_omitted = omitted
        self._touch_duration()

    async def _acquire(self, env_spec: NotebookEnvironmentSpec) -> KernelLease | Outcome | None:
        """A kernel, or how the run ends, or None when the operator is stopping (the run goes on later)."""
        name = self.body["spec"]["environmentRef"]["name"]
        if not self.service.registry.has_ready_pod(self.namespace, name):
            self._set_progress(
                RunState.PENDING, Reason.WAITING_FOR_ENVIRONMENT, f"waiting for a ready gateway pod of {name}"
            )
            await self._flush()
            ready = await self._interruptible(
                self.service.registry.wait_for_pod(
                    self.namespace, name, self.settings.environment_wait_seconds
                )
            )
            if ready is None:
                return self._interrupted()
            if not ready:
                return failed(
                    Reason.GATEWAY_LOST,
                    f"environment {name} had no ready gateway pod "
                    f"for {self.settings.environment_wait_seconds:.0f}s",
                )
        return await self._acquire_free_kernel(name)

    async def _acquire_free_kernel(self, name: str) -> KernelLease | Outcome | None:
        """When every gateway pod is at its kernel limit, the run waits (Pending, WaitingForKernel) for
        one to be released, up to environment_wait_seconds, instead of failing at once."""
        wait_seconds = self.settings.environment_wait_seconds
        deadline = time.monotonic() + wait_seconds
        delay = KERNEL_WAIT_FIRST_DELAY
        waiting = False
        while True:
            try:
                return await self.service.registry.acquire(self.namespace, name)
            except (GatewaysAtCapacity, KernelLimitReached) as exc:
                if time.monotonic() + delay > deadline:
                    return failed(
                        Reason.KERNEL_LIMIT_REACHED,
                        f"no kernel of environment {name} became free within {wait_seconds:.0f}s: {exc}",
                    )
                if not waiting:
                    waiting = True
                    self._set_progress(
                        RunState.PENDING,
                        Reason.WAITING_FOR_KERNEL,
                        f"every gateway pod of {name} is at its kernel limit; waiting for a free kernel",
                    )
                    await self._flush()
                if await self._interruptible(asyncio.sleep(delay, True)) is None:
                    return self._interrupted()
                delay = min(delay * 2, KERNEL_WAIT_MAX_DELAY)
            except (NoGatewayAvailable, EngineError) as exc:
                return failed(Reason.GATEWAY_LOST, f"no kernel could be started: {exc}")

    async def _attempt(
        self, spec: NotebookRunSpec, env_spec: NotebookEnvironmentSpec, notebook: NotebookNode
    ) -> tuple[Outcome | None, NotebookNode]:
        executed = nbformat.from_dict(notebook)
        lease: KernelLease | None = None
        start_index = 0
        resume: ResumePoint | None = None
        if self.status.kernel is not None and self.status.state == RunState.RUNNING:
            lease, start_index, resume = await self._reattach(executed)
            if lease is None and self._journal_ran and self.status.attempt > spec.retries:
                # Starting over would run again cells the journal says ran, and no retry is left:
                # the run ends with what the journal kept.
                self.status.kernel = None
                message = (
                    f"the kernel of attempt {self.status.attempt} is gone after the operator restarted, "
                    f"and spec.retries={spec.retries} allows no fresh attempt"
                )
                return failed(Reason.KERNEL_DIED, message), executed
            if lease is None:
                executed = nbformat.from_dict(notebook)
                self._init_cells(executed)
        # Held until the setup is sent, then dropped: a run does not keep its inputs in memory.
        self._pending_setup, self._first_setup = self._first_setup, None
        if self._pending_setup is None and (lease is None or self._setup_needed):
            resolved = await self._resolve_inputs(spec)
            if not isinstance(resolved, kernel_setup.KernelSetup):
                if lease is not None and resolved is None:  # stopping: the next operator goes on
                    with contextlib.suppress(Exception):
                        await lease.connection.close()
                elif lease is not None:  # nothing half-started: the kernel goes
                    self.service.registry.release(lease)
                    self.status.kernel = None
                return resolved, executed
            self._pending_setup = resolved
        if lease is None:
            acquired = await self._acquire(env_spec)
            if acquired is None:
                return None, executed
            if isinstance(acquired, Outcome):
                self.status.attempt += 1  # a failed acquisition counts against spec.retries
                return acquired, executed
            lease = acquired
            self.status.attempt += 1
            self.status.kernel = KernelAttachment(
                pod=lease.pod, address=lease.address, kernel_id=lease.kernel_id, session_id=lease.session_id
            )
            self._set_progress(
                RunState.RUNNING, Reason.RUNNING, f"attempt {self.status.attempt} on {lease.pod}"
            )
            await self._flush()
            kopf.info(
                self.body,
                reason="Started",
                message=f"attempt {self.status.attempt}: kernel {lease.kernel_id[:8]} "
                f"on gateway pod {lease.pod}",
            )
        lease.before_shutdown = kernel_setup.teardown  # removes the working directory before shutdown
        release = True
        try:
            outcome = await self._execute(spec, lease, executed, start_index, resume)
            if outcome is None:
                release = False
            return outcome, executed
        finally:
            if release:
                self.service.registry.release(lease)
            else:
                with contextlib.suppress(Exception):
                    await lease.connection.close()

    async def _reattach(self, executed: NotebookNode) -> tuple[KernelLease | None, int, ResumePoint | None]:
        """After an operator restart: the same kernel and session, from where the journal says we were."""
        attachment = self.status.kernel
        assert attachment is not None
        env_name = self.body["spec"]["environmentRef"]["name"]
        progress = await self.journal.progress(self.status.attempt)
        finished, in_flight = progress.finished, progress.in_flight
        self._setup_needed = not progress.setup_done
        await self.service.registry.wait_for_pod(self.namespace, env_name, 15.0)
        lease = None
        try:
            lease = await self.service.registry.adopt(
                self.namespace,
                env_name,
                attachment.pod,
                attachment.kernel_id,
                attachment.session_id,
                (in_flight[1],) if in_flight else (),
            )
        except (KernelNotFound, GatewayUnavailable) as exc:
            log.info("cannot reattach %s/%s: %s", self.namespace, self.name, exc)
        for index, cell in finished.items():
            if index < len(executed.cells):
                executed.cells[index] = nbformat.from_dict(cell)
                self._mark_from_cell(index, executed.cells[index])
        if lease is None:
            kopf.warn(
                self.body,
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
            self._mark_from_cell(index, cell, CellState.SUCCEEDED)
            finished = {**finished, index: dict(cell)}
        start = max(finished) + 1 if finished else 0
        resume = None
        if in_flight and in_flight[0] >= start:
            # What of the cell reached the dead operator is not replayed: the engine takes it first.
            resume = ResumePoint(in_flight[0], in_flight[1], tuple(progress.partial_outputs))
            start = resume.index
        kopf.info(
            self.body,
            reason="Reattached",
            message=f"operator restarted: reattached to kernel {attachment.kernel_id[:8]} at cell {start}",
        )
        return lease, start, resume

    def _mark_from_cell(self, index: int, cell: NotebookNode, state: CellState | None = None) -> None:
        """The cell's status entry from the executed cell (the engine's metadata.nbkube and outputs)."""
        meta = cell.get("metadata", {}).get("nbkube", {})
        duration = meta.get("duration_ms")
        entry = self._all_cells[index]
        entry.state = state or CellState(meta.get("state", CellState.SUCCEEDED))
        entry.execution_count = cell.get("execution_count")
        entry.duration_ms = round(duration) if duration is not None else None
        entry.summary = cellstatus.summarize_outputs(cell.get("outputs", []))
        self._refresh_cells()

    async def _execute(
        self,
        spec: NotebookRunSpec,
        lease: KernelLease,
        notebook: NotebookNode,
        start_index: int,
        resume: ResumePoint | None,
    ) -> Outcome | None:
        attachment = self.status.kernel
        assert attachment is not None
        attempt = self.status.attempt
        with self._guard(Reason.JOURNAL_NOT_WRITTEN, "opening the journal"):
            await self.journal.open()  # off the loop, before the first (in-line) append
        if self._callback_failure is not None:
            return self._callback_failure

        # Each step of a callback is guarded: an error fails the run (with its reason and an event)
        # instead of escaping into the engine and ending this daemon.
        async def on_cell_start(index: int, cell: Any, msg_id: str) -> None:
            with self._guard(Reason.JOURNAL_NOT_WRITTEN, f"journaling the start of cell {index}"):
                await self.journal.started(attempt, index, msg_id)
            with self._guard(Reason.STATUS_NOT_UPDATED, f"the status of cell {index}"):
                attachment.cell_index = index
                attachment.msg_id = msg_id
                self._all_cells[index].state = CellState.RUNNING
                self._refresh_cells()
                self._publish()

        def on_output(index: int, output: dict[str, Any]) -> None:
            with self._guard(Reason.JOURNAL_NOT_WRITTEN, f"journaling an output of cell {index}"):
                self.journal.output(attempt, index, output)

        async def on_cell_end(index: int, result: CellResult) -> None:
            cell = notebook.cells[index]
            state = result.state
            with self._guard(Reason.JOURNAL_NOT_WRITTEN, f"journaling cell {index}"):
                if state not in NOT_RUN_CELL_STATES:
                    await self.journal.record(attempt, index, dict(cell))
            with self._guard(Reason.STATUS_NOT_UPDATED, f"the status of cell {index}"):
                if result.duration_ms is not None:
                    cell_duration.labels(state).observe(result.duration_ms / 1000)
                self._mark_from_cell(index, cell, state)
                self._publish()
            with self._guard(Reason.RESULTS_NOT_COMMITTED, f"the checkpoint after cell {index}"):
                self._maybe_checkpoint(spec, notebook)

        executor = NotebookExecutor(
            lease.connection,
            cell_timeout=spec.timeouts.cell_seconds,
            allow_errors=spec.allow_errors,
            # The engine spills no more than the store keeps per run.
            limits=OutputLimits(spill_dir=self.journal.spill_dir, spill_bytes=DEFAULT_MAX_SPILL_BYTES),
            on_cell_start=on_cell_start,
            on_output=on_output,
            on_cell_end=on_cell_end,
        )

        async def execute() -> NotebookResult:
            if self._pending_setup is not None:
                await self._set_up_kernel(lease, attempt)
            return await executor.execute_notebook(notebook, resume=resume, start_index=start_index)

        execution = asyncio.create_task(execute())
        stop_waiters: dict[asyncio.Task[Any], str] = {
            asyncio.create_task(self._until_stopped()): "stopped",
            asyncio.create_task(self.cancel_requested.wait()): "cancel",
            asyncio.create_task(self.deadline_passed.wait()): "deadline",
            asyncio.create_task(self._callback_failed.wait()): "callback",
        }
        try:
            done, _ = await asyncio.wait({execution, *stop_waiters}, return_when=asyncio.FIRST_COMPLETED)
            if execution not in done:
                why = next(stop_waiters[t] for t in done if t in stop_waiters)
                if why == "callback" and self.stopped and not self._deleted():
                    why = "stopped"
                if why == "stopped" and not self._deleted():
                    # The operator is exiting: leave the kernel running for the next operator.
                    execution.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await execution
                    await self.writer.flush(self.status.to_api())
                    return None
                executor.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(execution), 15)
                if not execution.done():
                    execution.cancel()
                if why == "deadline":
                    return failed(Reason.DEADLINE_EXCEEDED, "the run's deadline (timeouts.runSeconds) passed")
                if why == "callback" and self._callback_failure is not None:
                    return self._callback_failure
                return cancelled()
            result = execution.result()
        except kernel_setup.SetupFailed as exc:
            return failed(Reason.SETUP_FAILED, str(exc)[:2000])
        except GatewayUnavailable as exc:
            return failed(Reason.GATEWAY_LOST, f"gateway pod {lease.pod} was lost: {exc}")
        except ExecutionLost as exc:
            return failed(Reason.KERNEL_DIED, str(exc))
        except Exception as exc:  # an error of ours: it ends this run, with a word, not the daemon
            log.exception("execution of %s/%s failed", self.namespace, self.name)
            return failed(Reason.OPERATOR_ERROR, f"the execution failed: {type(exc).__name__}: {exc}"[:2000])
        finally:
            for task in stop_waiters:
                task.cancel()
            if not execution.done():
                execution.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await execution
        self._spill = result.spill_path
        if self._callback_failure is not None:  # e.g. the journal of the last cell, or its checkpoint
            return self._callback_failure
        return self._outcome_of(result, spec)

    async def _set_up_kernel(self, lease: KernelLease, attempt: int) -> None:
        """The run's setup (engine/setup.py), silently, before the first cell: it never shows in the
        notebook; the journal records that it was done, not what it held."""
        setup, self._pending_setup = self._pending_setup, None
        assert setup is not None
        size = setup.file_bytes
        await kernel_setup.apply_setup(lease.connection, setup)
        del setup
        memory.release_freed_memory(size)
        with self._guard(Reason.JOURNAL_NOT_WRITTEN, "journaling the run's setup"):
            await self.journal.setup_done(attempt)
        self._setup_needed = False

    def _maybe_checkpoint(self, spec: NotebookRunSpec, notebook: NotebookNode) -> None:
        """Long runs commit partial results now and then, so progress is visible and survives a crash."""
        store = self.service.results
        done = self.status.cells_done or 0
        now = time.monotonic()
        if store is None or not self._checkpoints.should_checkpoint(done, now):
            return
        if self._checkpoint_task is not None and not self._checkpoint_task.done():
            return
        self._checkpoints.checkpointed(done, now)
        snapshot = nbformat.from_dict(copy.deepcopy(dict(notebook)))
        record = self._record(spec, Outcome(RunState.RUNNING, Reason.RUNNING, "checkpoint"))

        async def commit() -> None:
            try:
                info = await store.commit_run(record, snapshot, {}, final=False)
            except Exception as exc:
                self._fail_run(
                    Reason.RESULTS_NOT_COMMITTED,
                    f"the checkpoint at {record.progress} cells was not committed: "
                    f"{type(exc).__name__}: {exc}",
                )
                return
            if self.status.result is None or not self.status.result.final:
                self.status.result = RunResult(commit=info.commit, path=info.path, final=False)
                self._publish()

        self._checkpoint_task = asyncio.create_task(commit())

    def _fail_run(self, reason: str, message: str) -> None:
        """Ends the run with `reason` at the next step: the execution is stopped, what ran is committed."""
        if self._callback_failure is None:
            log.error("%s/%s: %s: %s", self.namespace, self.name, reason, message)
            self._callback_failure = failed(reason, message[:2000])
            self._callback_failed.set()

    @contextlib.contextmanager
    def _guard(self, reason: str, what: str) -> Iterator[None]:
        """Turns an error in a callback's step into the run's failure (see `_fail_run`)."""
        try:
            yield
        except Exception as exc:
            log.exception("%s/%s: %s failed", self.namespace, self.name, what)
            self._fail_run(reason, f"{what} failed: {type(exc).__name__}: {exc}")

    async def _interruptible(self, waiting: Any) -> Any:
        """Awaits `waiting` unless the run is cancelled, passes its deadline or the operator stops
        first (then None)."""
        task = asyncio.ensure_future(waiting)
        stops = [
            asyncio.create_task(self._until_stopped()),
            asyncio.create_task(self.cancel_requested.wait()),
            asyncio.create_task(self.deadline_passed.wait()),
        ]
        try:
            done, _ = await asyncio.wait({task, *stops}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for stop in stops:
                stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        return None

    async def _until_stopped(self) -> None:
        await self.stopped.wait()

    def _deleted(self) -> bool:
        return bool(self.body["metadata"].get("deletionTimestamp"))

    def _outcome_of(self, result: NotebookResult, spec: NotebookRunSpec) -> Outcome:
        if result.state == CellState.SUCCEEDED:
            executed = sum(1 for c in self._all_cells if c.state not in NOT_RUN_CELL_STATES)
            return succeeded(executed)
        index = result.failed_index if result.failed_index is not None else 0
        label = f"cell {index} ({self._all_cells[index].id})"
        if result.state == CellState.KERNEL_DIED:
            return failed(Reason.KERNEL_DIED, f"the kernel died while running {label}")
        if result.state == CellState.TIMED_OUT:
            return failed(
                Reason.TIMED_OUT, f"{label} ran longer than timeouts.cellSeconds={spec.timeouts.cell_seconds}"
            )
        if result.state == CellState.CANCELLED:
            return cancelled()
        summary = self._all_cells[index].summary or "error"
        return failed(Reason.CELL_ERROR, f"{label} failed: {summary}")

    async def _commit(
        self,
        spec: NotebookRunSpec,
        env_spec: NotebookEnvironmentSpec,
        notebook: NotebookNode,
        outcome: Outcome,
    ) -> Outcome:
        """Commits the executed notebook; the run's outcome (a checkpoint that failed meanwhile fails
        a run that would have succeeded)."""
        store = self.service.results
        if store is None:
            return outcome
        if self._checkpoint_task is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint_task
        if self._callback_failure is not None and outcome.state == RunState.SUCCEEDED:
            outcome = self._callback_failure
        spill = self._spill
        spills = {"outputs.jsonl": spill} if spill is not None and spill.exists() else {}
        try:
            info = await store.commit_run(self._record(spec, outcome), notebook, spills, final=True)
        except Exception as exc:
            kopf.warn(self.body, reason=Reason.RESULTS_NOT_COMMITTED, message=f"results commit failed: {exc}")
            log.exception("results commit of %s/%s failed", self.namespace, self.name)
            return outcome
        self.status.result = RunResult(commit=info.commit, path=info.path, final=True)
        # The result is safe; the journal goes a little later so `nbkube logs -f` followers can
        # read its last lines after they see the run end.
        self.service.remove_later(self.journal)
        kopf.info(self.body, reason="ResultsCommitted", message=f"{info.path} at {info.commit[:12]}")
        return outcome

    def _record(self, spec: NotebookRunSpec, outcome: Outcome) -> Any:
        from nbkube.results import RunRecord

        return RunRecord(
            namespace=self.namespace,
            name=self.name,
            uid=self.uid,
            environment=spec.environment_ref.name,
            parameters=dict(spec.parameters),
            attempt=self.status.attempt,
            state=str(outcome.state),
            reason=str(outcome.reason),
            notebook=spec.notebook.file_name(),
            progress=self.status.progress,
        )
