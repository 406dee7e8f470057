"""A run's results: checkpoints while it runs and the final commit of the executed notebook.

Commits go to the namespace's results repository (results/repositories.py) through the narrow
`RunStore` interface; a checkpoint that fails fails the run (RESULTS_NOT_COMMITTED) at its next step,
and a final commit that fails is an event, never a lost outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import kopf
import nbformat
from nbformat import NotebookNode

from nbkube.api import NotebookRunSpec, Reason, RunResult, RunState
from nbkube.kernelwork.failures import Failures
from nbkube.results import CheckpointPolicy, CommitInfo, RunRecord
from nbkube.results.layout import SPILL_FILE
from nbkube.run import values
from nbkube.run.outcome import Outcome, from_failure
from nbkube.run.progress import ProgressBook

log = logging.getLogger(__name__)


class RunStore(Protocol):
    """What a run needs of the results repositories."""

    async def commit_run(
        self,
        record: RunRecord,
        notebook: NotebookNode,
        spills: Mapping[str, bytes | Path] | None = None,
        *,
        final: bool,
    ) -> CommitInfo: ...

    async def commit_files_of_run(self, record: RunRecord, files: Mapping[str, bytes]) -> CommitInfo: ...

    async def read_file(self, namespace: str, path: str, ref: str = "HEAD") -> bytes: ...

    async def read_files(
        self, namespace: str, path: str, ref: str = "HEAD", *, max_files: int, max_bytes: int
    ) -> list[tuple[str, bytes]]: ...


class RunCommitter:
    """Commits one run's results; `store` None means the operator keeps no results."""

    def __init__(
        self,
        store: RunStore | None,
        book: ProgressBook,
        uid: str,
        spec: NotebookRunSpec,
        policy: CheckpointPolicy,
    ) -> None:
        self.store = store
        self.book = book
        self.uid = uid
        self.spec = spec
        self.policy = policy
        self._checkpoint: asyncio.Task[None] | None = None

    def record(self, outcome: Outcome) -> RunRecord:
        book, spec = self.book, self.spec
        return RunRecord(
            namespace=book.namespace,
            name=book.name,
            uid=self.uid,
            environment=spec.environment_ref.name,
            parameters=dict(spec.parameters),
            attempt=book.status.attempt,
            state=str(outcome.state),
            reason=str(outcome.reason),
            notebook=spec.notebook.file_name(),
            progress=book.status.progress,
        )

    def maybe_checkpoint(self, notebook: NotebookNode, failures: Failures) -> None:
        """Long runs commit partial results now and then, so progress is visible and survives a
        crash; one checkpoint at a time, in the background."""
        store = self.store
        done = self.book.status.cells_done or 0
        now = time.monotonic()
        if store is None or not self.policy.should_checkpoint(done, now):
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self.policy.checkpointed(done, now)
        snapshot = nbformat.from_dict(copy.deepcopy(dict(notebook)))
        record = self.record(Outcome(RunState.RUNNING, Reason.RUNNING, "checkpoint"))

        async def commit() -> None:
            try:
                info = await store.commit_run(record, snapshot, {}, final=False)
            except Exception as exc:
                failures.fail(
                    Reason.RESULTS_NOT_COMMITTED,
                    f"the checkpoint at {record.progress} cells was not committed: "
                    f"{type(exc).__name__}: {exc}",
                )
                return
            status = self.book.status
            if status.result is None or not status.result.final:
                status.result = RunResult(commit=info.commit, path=info.path, final=False)
                self.book.publish()

        self._checkpoint = asyncio.create_task(commit())

    def record_values(self, notebook: NotebookNode) -> None:
        """status.values (and what was left out) from the executed notebook's recorded values; a
        notebook that cannot be read for them is a note, never a failed run."""
        status = self.book.status
        try:
            found = values.recorded_values(notebook)
        except Exception as exc:  # a malformed notebook must not cost the run its result
            log.warning("%s/%s: recorded values not read: %s", self.book.namespace, self.book.name, exc)
            found = values.RecordedValues(notes=[f"recorded values not read: {type(exc).__name__}"])
        status.values = found.values or None
        status.values_omitted = found.omitted or None
        status.value_notes = found.notes or None

    async def commit_final(
        self,
        notebook: NotebookNode,
        outcome: Outcome,
        failures: Failures,
        spill: Path | None,
        on_committed: Callable[[], None],
    ) -> Outcome:
        """Commits the executed notebook (and the spill of its truncated outputs); the run's outcome
        (a checkpoint that failed meanwhile fails a run that would have succeeded). `on_committed`
        runs once the result is safe. The values the notebook recorded go into the status first
        (run/values.py), kept or not."""
        self.record_values(notebook)
        if self.store is None:
            return outcome
        if self._checkpoint is not None:
            with contextlib.suppress(Exception):
                await self._checkpoint
        if failures.first is not None and outcome.state == RunState.SUCCEEDED:
            outcome = from_failure(failures.first)
        spilled = spill is not None and await asyncio.to_thread(spill.exists)
        spills = {SPILL_FILE: spill} if spill is not None and spilled else {}
        book = self.book
        try:
            info = await self.store.commit_run(self.record(outcome), notebook, spills, final=True)
        except Exception as exc:
            kopf.warn(book.body, reason=Reason.RESULTS_NOT_COMMITTED, message=f"results commit failed: {exc}")
            log.exception("results commit of %s/%s failed", book.namespace, book.name)
            return outcome
        book.status.result = RunResult(commit=info.commit, path=info.path, final=True)
        on_committed()
        kopf.info(book.body, reason="ResultsCommitted", message=f"{info.path} at {info.commit[:12]}")
        return outcome
