"""Drives one NotebookRun from Pending to a terminal state.

One kopf daemon per active run calls RunService.drive(), which hands the run to a RunDriver: a
short coordinator of the run's parts. It validates the spec, loads the notebook and the run's
inputs, then runs attempts (run/attempt.py: a kernel taken or reattached, cells executed with a
journal) until one ends the run or no retry is left, commits the result (run/commit.py) and writes
the terminal status (run/progress.py). When the operator itself is stopped, the kernel is left
running and the journal says where the run was, so the next operator reattaches instead of starting
over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kopf
from nbformat import NotebookNode
from pydantic import ValidationError

from nbkube.api import (
    NotebookEnvironmentSpec,
    NotebookRunSpec,
    NotebookRunStatus,
    Reason,
    RunState,
)
from nbkube.api.common import now_rfc3339, parse_timestamp, validation_message
from nbkube.config import Settings
from nbkube.engine import inject_parameters, upgrade_notebook
from nbkube.engine import setup as kernel_setup
from nbkube.kernels import KernelRegistry
from nbkube.kernelwork import environments
from nbkube.kernelwork.failures import Failure, Failures
from nbkube.kernelwork.journal import WorkJournal
from nbkube.kernelwork.kernelsource import KernelSource
from nbkube.kernelwork.stops import Stopped, Stops
from nbkube.kube import Kube
from nbkube.results import CheckpointPolicy
from nbkube.run import inputs, source
from nbkube.run.attempt import Attempt, OnInputsWaiting
from nbkube.run.commit import RunCommitter, RunStore
from nbkube.run.outcome import Outcome, failed, from_failure, should_retry, stopped_by
from nbkube.run.progress import ProgressBook
from nbkube.run.sweepdriver import drive_sweep

NOTEBOOK_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class RunContext:
    """What every run's driver shares: the operator's clients, settings and stores."""

    kube: Kube
    settings: Settings
    registry: KernelRegistry
    results: RunStore | None
    remove_later: Callable[[WorkJournal], None]  # the journal of a committed run, a little later


class RunDriver:
    def __init__(self, ctx: RunContext, body: kopf.Body, stopped: Stopped) -> None:
        self.ctx = ctx
        self.body = body
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.book = ProgressBook(ctx.kube, body, ctx.settings.status_interval_seconds)
        self.failures = Failures(f"{self.namespace}/{self.name}")
        self.stops = Stops(stopped, self.failures)
        self.journal = WorkJournal(ctx.settings.journal_dir, self.uid)

    @property
    def status(self) -> NotebookRunStatus:
        return self.book.status

    async def drive(self) -> None:
        try:
            spec = NotebookRunSpec.model_validate(dict(self.body.get("spec") or {}))
        except ValidationError as exc:
            await self.book.finish(failed(Reason.INVALID_SPEC, validation_message(exc)))
            return
        if self.status.start_time is None:
            self.status.start_time = now_rfc3339()
        if spec.cancel:
            self.stops.cancel.set()  # later cancels come from the watch stream (RunService.observe)
        if spec.is_sweep():
            await drive_sweep(self.ctx.kube, self.book, self.stops, self.uid, spec, self.ctx.results)
            return
        if spec.timeouts.run_seconds is not None:
            started = parse_timestamp(self.status.start_time) or time.time()
            self.stops.set_deadline(started + spec.timeouts.run_seconds)
        try:
            outcome = await self._run(spec)
        finally:
            self.stops.close()
        if outcome is not None:
            await self.book.finish(outcome)

    def _stopping(self) -> Outcome | None:
        cause = self.stops.pending()
        return None if cause is None else stopped_by(cause)

    async def _run(self, spec: NotebookRunSpec) -> Outcome | None:
        """The run's outcome, or None when the operator stops (the run goes on after the restart)."""
        ref = spec.environment_ref
        foreign = environments.foreign_environment("NotebookRun", self.namespace, ref.namespace, ref.name)
        if foreign is not None:
            return from_failure(foreign)
        if (early := self._stopping()) is not None:
            return early
        env_spec = await environments.environment_spec(self.ctx.kube, self.namespace, ref.name)
        if isinstance(env_spec, Failure):
            return from_failure(env_spec)
        notebook = await self._load_notebook(spec, env_spec)
        if isinstance(notebook, Outcome):
            return notebook
        if spec.parameters:
            try:
                notebook = inject_parameters(notebook, spec.parameters, kernel_name=env_spec.kernel_name)
            except Exception as exc:
                return failed(Reason.INVALID_SPEC, f"parameters cannot be injected: {exc}")
        notebook = upgrade_notebook(notebook)
        self.book.init_cells(notebook)
        settings = self.ctx.settings
        committer = RunCommitter(
            self.ctx.results,
            self.book,
            self.uid,
            spec,
            CheckpointPolicy(
                every_cells=settings.checkpoint_every_cells, every_seconds=settings.checkpoint_every_seconds
            ),
        )
        kernels = KernelSource(
            self.ctx.registry,
            self.namespace,
            ref.name,
            wait_seconds=settings.environment_wait_seconds,
            not_ready_detail=lambda: environments.not_ready_detail(self.ctx.kube, self.namespace, ref.name),
        )
        while True:
            if (early := self._stopping()) is not None:
                return await self._commit(committer, notebook, early)
            attempt = Attempt(
                spec,
                self.book,
                self.stops,
                self.journal,
                kernels,
                committer,
                lambda on_waiting: self._resolve_inputs(spec, on_waiting),
                deleted=self._deleted,
            )
            result = await attempt.run(notebook)
            outcome = result.outcome
            if outcome is None:  # the operator is stopping; the run goes on after restart
                return None
            if not result.began and self.status.attempt == 0:
                return outcome  # bad input: nothing started, so no result either
            stopping = self.stops.pending() is not None or self.failures.first is not None
            if should_retry(outcome, self.status.attempt, spec.retries, stopping=stopping):
                kopf.warn(
                    self.body,
                    reason=Reason.RETRYING,
                    message=f"attempt {self.status.attempt} failed ({outcome.reason}: {outcome.message}); "
                    f"retrying with a fresh kernel from the first cell",
                )
                self.status.kernel = None
                self.book.init_cells(notebook)
                self.book.set_progress(RunState.RUNNING, Reason.RETRYING, outcome.message)
                await self.book.flush()
                continue
            return await self._commit(committer, result.executed, outcome, result.spill)

    async def _commit(
        self, committer: RunCommitter, notebook: NotebookNode, outcome: Outcome, spill: Path | None = None
    ) -> Outcome:
        """The result committed; the journal goes a little later, so `nbkube logs -f` followers can
        read its last lines after they see the run end."""
        return await committer.commit_final(
            notebook,
            outcome,
            self.failures,
            spill,
            on_committed=lambda: self.ctx.remove_later(self.journal),
        )

    async def _load_notebook(
        self, spec: NotebookRunSpec, env_spec: NotebookEnvironmentSpec
    ) -> NotebookNode | Outcome:
        deadline = time.monotonic() + NOTEBOOK_WAIT_SECONDS
        waited = False
        while True:
            try:
                return await source.load(
                    self.ctx.kube, self.namespace, spec.notebook, env_spec.kernel_name, self._read_repo
                )
            except source.InvalidNotebook as exc:
                return failed(Reason.INVALID_NOTEBOOK, str(exc))
            except source.NotebookUnavailable as exc:
                # A ConfigMap applied together with the run may arrive a moment later; the
                # repository is ours, so a missing path there is final.
                if spec.notebook.repo_path is not None or time.monotonic() >= deadline or self.stops.stopped:
                    return failed(Reason.NOTEBOOK_NOT_FOUND, str(exc))
                if not waited:
                    waited = True
                    self.book.set_progress(RunState.PENDING, Reason.NOTEBOOK_NOT_FOUND, f"waiting: {exc}")
                    await self.book.flush()
                await asyncio.sleep(1.0)

    async def _resolve_inputs(
        self, spec: NotebookRunSpec, on_waiting: OnInputsWaiting | None = None
    ) -> kernel_setup.KernelSetup | Outcome | None:
        """The run's input files and env (run/inputs.py), or how the run ends; None when the operator
        stops. `on_waiting` is awaited when they first have to wait for an object to appear."""
        results = self.ctx.results

        async def read_repo(path: str, max_files: int, max_bytes: int) -> list[tuple[str, bytes]]:
            assert results is not None
            return await results.read_files(self.namespace, path, max_files=max_files, max_bytes=max_bytes)

        async def waiting(message: str) -> None:
            nonlocal on_waiting
            if on_waiting is not None:
                await on_waiting()
                on_waiting = None
            self.book.set_progress(RunState.PENDING, Reason.INPUT_NOT_FOUND, f"waiting: {message}")
            await self.book.flush()

        resolver = inputs.InputResolver(
            self.ctx.kube,
            self.namespace,
            read_repo if results is not None else None,
            read_secrets=self.ctx.settings.read_secrets,
        )
        try:
            return await inputs.resolve_waiting(
                lambda: resolver.resolve(spec, self.name),
                wait_seconds=NOTEBOOK_WAIT_SECONDS,
                on_waiting=waiting,
                stopping=lambda: bool(self.stops.stopped),
            )
        except inputs.InputProblem as problem:
            return None if self.stops.stopped else failed(problem.reason, problem.message[:2000])

    async def _read_repo(self, path: str) -> bytes | None:
        """`notebook.repoPath` is read from this namespace's repository only: a path of another
        namespace is "not found" whether or not it exists there (that repository is never opened)."""
        if self.ctx.results is None or not path.startswith(f"{self.namespace}/"):
            return None
        try:
            return await self.ctx.results.read_file(self.namespace, path)
        except (FileNotFoundError, ValueError):
            return None

    def _deleted(self) -> bool:
        return bool(self.body["metadata"].get("deletionTimestamp"))
