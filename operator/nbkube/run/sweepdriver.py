"""Drives a sweep: creates child runs `parallelism` at a time and aggregates their states."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import kopf

from nbkube.api import TERMINAL_RUN_STATES, NotebookRunSpec, Reason, RunState
from nbkube.kernelwork.stops import Stops
from nbkube.kube import Conflict, Kube, KubeError, run_path
from nbkube.run import sweep
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


async def drive_sweep(kube: Kube, book: ProgressBook, stops: Stops, uid: str, spec: NotebookRunSpec) -> None:
    """Drives the sweep `book` keeps the status of until it ends: its children `spec.parallelism` at
    a time, cancelled together when `stops.cancel` is set."""
    namespace, name, body = book.namespace, book.name, book.body
    matrix = await _started_matrix(kube, book, spec)
    spec = spec.model_copy(update={"matrix": matrix})
    children = sweep.child_runs(name, namespace, uid, spec)
    names = [c["metadata"]["name"] for c in children]
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
        if not cancelling:
            missing = [c for c in children if c["metadata"]["name"] not in existing]
            batch = missing[: max(0, spec.parallelism - active)]
            # Created together: one at a time, API latency under load would delay the last child by seconds.
            refused = [r for r in await asyncio.gather(*(_create(kube, c) for c in batch)) if r]
            if refused:
                await book.finish(failed(Reason.INVALID_SPEC, refused[0][:2000]))
                return
        summary = sweep.aggregate(names, {n: s for n, s in states.items() if n in existing})
        book.status.sweep = summary
        done = summary.succeeded + summary.failed
        book.status.progress = f"{done}/{summary.total}"
        if cancelling and all(states.get(n) in _DONE for n in existing):
            await book.finish(cancelled("sweep cancelled by spec.cancel"))
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
            await book.finish(outcome)
            return
        book.set_progress(
            RunState.RUNNING,
            Reason.SWEEP_RUNNING,
            f"{summary.running} running, {summary.succeeded} succeeded, {summary.failed} failed, "
            f"{summary.pending} pending",
        )
        book.publish()
        await asyncio.sleep(POLL_SECONDS)
