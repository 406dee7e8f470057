"""Drives a sweep: creates child runs `parallelism` at a time and aggregates their states and table.

Each pass the parent's status gets the counts and the table (run/sweeptable.py: per child its
parameters, state, duration and recorded values, bounded); when the sweep ends, summary.csv and
summary.json (the whole table) are committed to the parent's directory in the results repository and
status.result names summary.json. A commit that fails is a warning event, never a lost outcome.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

import kopf

from nbkube.api import TERMINAL_RUN_STATES, NotebookRunSpec, Reason, RunResult, RunState
from nbkube.kernelwork.stops import Stops
from nbkube.kube import Conflict, Kube, KubeError, run_path
from nbkube.results import CommitInfo, RunRecord
from nbkube.results.layout import SUMMARY_CSV, SUMMARY_JSON
from nbkube.run import sweep, sweeptable
from nbkube.run.outcome import Outcome, cancelled, failed
from nbkube.run.progress import ProgressBook

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_DONE = TERMINAL_RUN_STATES
# The matrix a sweep started with. CEL cannot type a free-form matrix (the API server refuses an
# immutability rule on it), so the operator keeps the original here and ignores later changes.
MATRIX_ANNOTATION = "nbkube.io/sweep-matrix"


def _canonical(matrix: dict[str, Any]) -> str:
    return json.dumps(matrix, sort_keys=True, separators=(",", ":"))


async def _started_matrix(kube: Kube, book: ProgressBook, spec: NotebookRunSpec) -> dict[str, Any]:
    """The matrix the sweep started with: recorded on the first pass, read back on every later one
    (after an operator restart too), so a changed spec.matrix never adds or drops children."""
    annotations = (book.body.get("metadata") or {}).get("annotations") or {}
    recorded = annotations.get(MATRIX_ANNOTATION)
    if recorded is not None:
        try:
            matrix: dict[str, Any] = json.loads(recorded)
            return matrix
        except ValueError:
            log.warning("%s/%s: unreadable %s annotation", book.namespace, book.name, MATRIX_ANNOTATION)
    patch = {"metadata": {"annotations": {MATRIX_ANNOTATION: _canonical(spec.matrix)}}}
    try:
        await kube.merge_patch(run_path(book.namespace, book.name), patch)
    except Exception as exc:  # e.g. an annotation past the API's size limit: the sweep still runs
        log.warning("%s/%s: the sweep's matrix is not recorded: %s", book.namespace, book.name, exc)
    return spec.matrix


class SweepStore(Protocol):
    """What a sweep needs of the results repositories."""

    async def commit_files_of_run(self, record: RunRecord, files: Mapping[str, bytes]) -> CommitInfo: ...


class SweepTable:
    """The sweep's rows as of the last pass, and the summary files committed when it ends."""

    def __init__(self, book: ProgressBook, uid: str, spec: NotebookRunSpec, names: list[str]) -> None:
        self.book = book
        self.uid = uid
        self.spec = spec
        self.names = names
        self.combos = sweep.combinations(spec.matrix)
        self.parameter_names = sorted(spec.matrix)
        self.rows: list[sweeptable.Row] = []

    def update(self, existing: Mapping[str, Mapping[str, Any]]) -> None:
        """The rows from the children as listed; the status gets their bounded copy."""
        self.rows = sweeptable.rows_of(self.names, self.combos, existing)
        summary = self.book.status.sweep
        assert summary is not None
        names = sweeptable.value_names(self.rows)
        summary.parameter_names = self.parameter_names  # (a matrix has at most 16 keys)
        summary.value_names = names[: sweeptable.MAX_COLUMNS]
        summary.rows, summary.rows_omitted = sweeptable.status_rows(self.rows, names)

    async def commit(self, store: SweepStore | None, outcome: Outcome) -> None:
        """summary.csv and summary.json in the parent's directory; status.result names the JSON."""
        book = self.book
        if store is None:
            return
        names = sweeptable.value_names(self.rows)
        doc = sweeptable.summary(
            namespace=book.namespace,
            name=book.name,
            uid=self.uid,
            state=str(outcome.state),
            reason=str(outcome.reason),
            parameter_names=self.parameter_names,
            rows=self.rows,
        )
        files = {
            SUMMARY_CSV: sweeptable.csv_bytes(self.rows, self.parameter_names, names),
            SUMMARY_JSON: sweeptable.json_bytes(doc),
        }
        record = RunRecord(
            namespace=book.namespace,
            name=book.name,
            uid=self.uid,
            environment=self.spec.environment_ref.name,
            parameters=dict(self.spec.parameters),
            attempt=max(book.status.attempt, 1),
            state=str(outcome.state),
            reason=str(outcome.reason),
            notebook=self.spec.notebook.file_name(),
            progress=book.status.progress,
            result_file=SUMMARY_JSON,
        )
        try:
            info = await store.commit_files_of_run(record, files)
        except Exception as exc:
            kopf.warn(
                book.body, reason=Reason.RESULTS_NOT_COMMITTED, message=f"sweep summary not committed: {exc}"
            )
            log.exception("summary commit of %s/%s failed", book.namespace, book.name)
            return
        book.status.result = RunResult(commit=info.commit, path=info.path, final=True)
        kopf.info(book.body, reason="ResultsCommitted", message=f"{info.path} at {info.commit[:12]}")


# What the API server answers for an object it will never accept: creating it again cannot help.
_REFUSED = (400, 422)


async def _create(kube: Kube, child: dict[str, Any]) -> str | None:
    """Creates one child run; the API server's reason when it refuses the child for good, else None
    (other errors are tried again on the next pass)."""
    try:
        await kube.create(child)
    except Conflict:
        pass  # created by an earlier pass of this sweep (e.g. before an operator restart)
    except KubeError as exc:
        if exc.status in _REFUSED:
            return f"child run {child['metadata']['name']} was refused by the API server: {exc.message}"
        meta = child["metadata"]
        log.warning("%s/%s: creating a child run failed: %s", meta["namespace"], meta["name"], exc)
    return None


async def drive_sweep(
    kube: Kube,
    book: ProgressBook,
    stops: Stops,
    uid: str,
    spec: NotebookRunSpec,
    results: SweepStore | None = None,
) -> None:
    """Drives the sweep `book` keeps the status of until it ends: its children `spec.parallelism` at
    a time, cancelled together when `stops.cancel` is set; its table goes to `results` at the end."""
    namespace, name, body = book.namespace, book.name, book.body
    matrix = await _started_matrix(kube, book, spec)
    spec = spec.model_copy(update={"matrix": matrix})
    children = sweep.child_runs(name, namespace, uid, spec)
    names = [c["metadata"]["name"] for c in children]
    table = SweepTable(book, uid, spec, names)

    async def finish(outcome: Outcome) -> None:
        await table.commit(results, outcome)
        await book.finish(outcome)

    runs_path = run_path(namespace)
    selector = sweep.parent_selector(name)
    book.status.cells_total = None
    if book.status.state is None:
        kopf.info(
            body, reason="SweepStarted", message=f"{len(children)} child runs, {spec.parallelism} at a time"
        )
    cancelling = False
    started_matrix = warned_matrix = _canonical(matrix)
    while not stops.stopped:
        current = _canonical((body.get("spec") or {}).get("matrix") or {})
        if current not in (started_matrix, warned_matrix):
            warned_matrix = current
            kopf.warn(
                body,
                reason="MatrixChanged",
                message=f"spec.matrix is immutable once a sweep started: the change is ignored and the "
                f"sweep keeps its {len(children)} child runs",
            )
        existing = {c["metadata"]["name"]: c for c in await kube.list(runs_path, selector)}
        states = {n: (c.get("status") or {}).get("state") for n, c in existing.items()}
        if stops.cancel.is_set() and not cancelling:
            cancelling = True
            for child in existing:
                if states.get(child) not in _DONE:
                    await kube.merge_patch(run_path(namespace, child), {"spec": {"cancel": True}})
        active = sum(1 for n in existing if states.get(n) not in _DONE)
        refused: list[str] = []
        if not cancelling:
            missing = [c for c in children if c["metadata"]["name"] not in existing]
            batch = missing[: max(0, spec.parallelism - active)]
            # Created together: one at a time, API latency under load would delay the last child by seconds.
            refused = [r for r in await asyncio.gather(*(_create(kube, c) for c in batch)) if r]
        summary = sweep.aggregate(names, {n: s for n, s in states.items() if n in existing})
        book.status.sweep = summary
        table.update(existing)
        if refused:
            await finish(failed(Reason.INVALID_SPEC, refused[0][:2000]))
            return
        done = summary.succeeded + summary.failed
        book.status.progress = f"{done}/{summary.total}"
        if cancelling and all(states.get(n) in _DONE for n in existing):
            await finish(cancelled("sweep cancelled by spec.cancel"))
            return
        if done == summary.total:
            outcome: Outcome
            if summary.failed:
                outcome = failed(
                    Reason.SOME_CHILDREN_FAILED, f"{summary.failed} of {summary.total} child runs failed"
                )
            else:
                outcome = Outcome(
                    RunState.SUCCEEDED, Reason.SUCCEEDED, f"all {summary.total} child runs succeeded"
                )
            await finish(outcome)
            return
        book.set_progress(
            RunState.RUNNING,
            Reason.SWEEP_RUNNING,
            f"{summary.running} running, {summary.succeeded} succeeded, {summary.failed} failed, "
            f"{summary.pending} pending",
        )
        book.publish()
        await asyncio.sleep(POLL_SECONDS)
