"""Drives a sweep: creates child runs `parallelism` at a time and aggregates their states."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

import kopf

from nbkube import API_VERSION
from nbkube.api import NotebookRunSpec, Reason, RunState
from nbkube.kube import Conflict, KubeError, resource_path
from nbkube.run import sweep
from nbkube.run.outcome import Outcome, cancelled, failed

if TYPE_CHECKING:
    from nbkube.run.driver import RunDriver

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
_DONE = (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)
# The matrix a sweep started with. CEL cannot type a free-form matrix (the API server refuses an
# immutability rule on it), so the operator keeps the original here and ignores later changes.
MATRIX_ANNOTATION = "nbkube.io/sweep-matrix"


def _canonical(matrix: dict[str, Any]) -> str:
    return json.dumps(matrix, sort_keys=True, separators=(",", ":"))


async def _started_matrix(driver: RunDriver, spec: NotebookRunSpec) -> dict[str, Any]:
    """The matrix the sweep started with: recorded on the first pass, read back on every later one
    (after an operator restart too), so a changed spec.matrix never adds or drops children."""
    annotations = (driver.body.get("metadata") or {}).get("annotations") or {}
    recorded = annotations.get(MATRIX_ANNOTATION)
    if recorded is not None:
        try:
            matrix: dict[str, Any] = json.loads(recorded)
            return matrix
        except ValueError:
            log.warning("%s/%s: unreadable %s annotation", driver.namespace, driver.name, MATRIX_ANNOTATION)
    path = resource_path(API_VERSION, "notebookruns", driver.namespace, driver.name)
    patch = {"metadata": {"annotations": {MATRIX_ANNOTATION: _canonical(spec.matrix)}}}
    try:
        await driver.kube.merge_patch(path, patch)
    except Exception as exc:  # e.g. an annotation past the API's size limit: the sweep still runs
        log.warning("%s/%s: the sweep's matrix is not recorded: %s", driver.namespace, driver.name, exc)
    return spec.matrix


# What the API server answers for an object it will never accept: creating it again cannot help.
_REFUSED = (400, 422)


async def _create(driver: RunDriver, child: dict[str, Any]) -> str | None:
    """Creates one child run; the API server's reason when it refuses the child for good, else None
    (other errors are tried again on the next pass)."""
    try:
        await driver.kube.create(child)
    except Conflict:
        pass  # created by an earlier pass of this sweep (e.g. before an operator restart)
    except KubeError as exc:
        if exc.status in _REFUSED:
            return f"child run {child['metadata']['name']} was refused by the API server: {exc.message}"
        log.warning("%s/%s: creating a child run failed: %s", driver.namespace, driver.name, exc)
    return None


async def drive_sweep(driver: RunDriver, spec: NotebookRunSpec) -> None:
    matrix = await _started_matrix(driver, spec)
    spec = spec.model_copy(update={"matrix": matrix})
    children = sweep.child_runs(driver.name, driver.namespace, driver.uid, spec)
    names = [c["metadata"]["name"] for c in children]
    runs_path = resource_path(API_VERSION, "notebookruns", driver.namespace)
    selector = sweep.parent_selector(driver.name)
    driver.status.cells_total = None
    if driver.status.state is None:
        kopf.info(
            driver.body,
            reason="SweepStarted",
            message=f"{len(children)} child runs, {spec.parallelism} at a time",
        )
    cancelling = False
    started_matrix = warned_matrix = _canonical(matrix)
    while not driver.stopped:
        current = _canonical((driver.body.get("spec") or {}).get("matrix") or {})
        if current not in (started_matrix, warned_matrix):
            warned_matrix = current
            kopf.warn(
                driver.body,
                reason="MatrixChanged",
                message=f"spec.matrix is immutable once a sweep started: the change is ignored and the "
                f"sweep keeps its {len(children)} child runs",
            )
        existing = {c["metadata"]["name"]: c for c in await driver.kube.list(runs_path, selector)}
        states = {n: (c.get("status") or {}).get("state") for n, c in existing.items()}
        if driver.cancel_requested.is_set() or (driver.body.get("spec") or {}).get("cancel"):
            if not cancelling:
                cancelling = True
                for name in existing:
                    if states.get(name) not in _DONE:
                        await driver.kube.merge_patch(f"{runs_path}/{name}", {"spec": {"cancel": True}})
        active = sum(1 for n in existing if states.get(n) not in _DONE)
        if not cancelling:
            missing = [c for c in children if c["metadata"]["name"] not in existing]
            batch = missing[: max(0, spec.parallelism - active)]
            # Created together: one at a time, API latency under load would delay the last child by seconds.
            refused = [r for r in await asyncio.gather(*(_create(driver, c) for c in batch)) if r]
            if refused:
                await driver._finish(failed(Reason.INVALID_SPEC, refused[0][:2000]))
                return
        summary = sweep.aggregate(names, {n: s for n, s in states.items() if n in existing})
        driver.status.sweep = summary
        done = summary.succeeded + summary.failed
        driver.status.progress = f"{done}/{summary.total}"
        if cancelling and all(states.get(n) in _DONE for n in existing):
            await driver._finish(cancelled("sweep cancelled by spec.cancel"))
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
            await driver._finish(outcome)
            return
        driver._set_progress(
            RunState.RUNNING,
            Reason.SWEEP_RUNNING,
            f"{summary.running} running, {summary.succeeded} succeeded, {summary.failed} failed, "
            f"{summary.pending} pending",
        )
        driver._publish()
        await asyncio.sleep(POLL_SECONDS)
