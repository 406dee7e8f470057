"""The parts a run (and a session) is built from, each on its own, without a cluster or a kernel:
the race of stops, how an execution ends a run, the retry decision, the progress book and its
final write, and waiting for a kernel."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import nbformat
import pytest
from nbkube.api import CellStatus, Reason, RunState
from nbkube.api.states import CellState
from nbkube.kernels import GatewaysAtCapacity
from nbkube.kernelwork import statuswriter
from nbkube.kernelwork.failures import Failure, Failures
from nbkube.kernelwork.kernelsource import KernelSource
from nbkube.kernelwork.stops import StopCause, Stops
from nbkube.kube import NotFound
from nbkube.run import outcome
from nbkube.run.cellstatus import MAX_CELL_ENTRIES
from nbkube.run.progress import ProgressBook


class Flag:
    """Stands for kopf.DaemonStopped: true once set, with wait()."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> bool:
        await self.event.wait()
        return True


def make_stops() -> tuple[Stops, Flag]:
    flag = Flag()
    return Stops(flag, Failures("team/run")), flag


# ---------------------------------------------------------------------------------------- the race


async def test_work_that_finishes_first_wins_the_race_and_no_stop_is_reported() -> None:
    stops, _ = make_stops()
    work = asyncio.ensure_future(asyncio.sleep(0, "done"))
    assert await stops.first(work) is None
    assert work.result() == "done"


async def test_a_cancel_stops_the_race_and_the_work_is_left_to_the_caller() -> None:
    stops, _ = make_stops()
    work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stops.cancel.set()
    assert await stops.first(work) == StopCause.CANCEL
    assert not work.cancelled()
    assert stops.pending() == StopCause.CANCEL


async def test_the_operator_stopping_outranks_every_other_stop() -> None:
    stops, flag = make_stops()
    work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    flag.event.set()
    stops.cancel.set()
    stops.deadline.set()
    stops.failures.fail(Reason.JOURNAL_NOT_WRITTEN, "disk full")
    assert await stops.first(work, failures=True) == StopCause.STOPPED


async def test_a_failure_stops_only_the_races_that_ask_for_it() -> None:
    stops, _ = make_stops()
    stops.failures.fail(Reason.JOURNAL_NOT_WRITTEN, "disk full")
    waiting = asyncio.ensure_future(asyncio.sleep(0, "waited"))
    assert await stops.first(waiting) is None
    work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    assert await stops.first(work, failures=True) == StopCause.FAILURE


async def test_an_interrupted_wait_is_cancelled_and_gives_none() -> None:
    stops, _ = make_stops()
    started = asyncio.Event()

    async def forever() -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    task = asyncio.ensure_future(stops.interruptible(forever()))
    await started.wait()
    stops.cancel.set()
    assert await task is None


async def test_a_deadline_in_the_past_is_passed_at_once_and_cancel_comes_first() -> None:
    stops, _ = make_stops()
    stops.set_deadline(0.0)
    await stops.deadline.wait()
    assert stops.pending() == StopCause.DEADLINE
    stops.cancel.set()
    assert stops.pending() == StopCause.CANCEL
    stops.close()


def test_only_the_first_failure_is_kept_and_a_guarded_error_becomes_one() -> None:
    failures = Failures("team/run")
    with failures.guard(Reason.STATUS_NOT_UPDATED, "the status of cell 3"):
        raise RuntimeError("api down")
    failures.fail(Reason.JOURNAL_NOT_WRITTEN, "later")
    assert failures.first == Failure(
        Reason.STATUS_NOT_UPDATED, "the status of cell 3 failed: RuntimeError: api down"
    )
    assert failures.happened.is_set()


# ------------------------------------------------------------------------------------- the outcome


def cell(index: int, summary: str | None = None) -> CellStatus:
    return CellStatus(index=index, id=f"c{index}", state=CellState.FAILED, summary=summary)


@pytest.mark.parametrize(
    ("state", "reason", "words"),
    [
        (CellState.FAILED, Reason.CELL_ERROR, "cell 2 (c2) failed: ZeroDivisionError: division by zero"),
        (CellState.TIMED_OUT, Reason.TIMED_OUT, "cell 2 (c2) ran longer than timeouts.cellSeconds=5.0"),
        (CellState.KERNEL_DIED, Reason.KERNEL_DIED, "the kernel died while running cell 2 (c2)"),
        (CellState.CANCELLED, Reason.CANCELLED, "cancelled by spec.cancel"),
    ],
)
def test_an_execution_that_stopped_at_a_cell_names_the_cell_and_why(
    state: CellState, reason: str, words: str
) -> None:
    ended = outcome.of_execution(state, cell(2, "ZeroDivisionError: division by zero"), 2, 5.0)
    assert (ended.reason, ended.message) == (reason, words)


def test_a_whole_execution_succeeds_with_the_count_of_cells_that_ran() -> None:
    ended = outcome.of_execution(CellState.SUCCEEDED, None, 7, None)
    assert (ended.state, ended.message) == (RunState.SUCCEEDED, "7 cell(s) executed")


def test_each_stop_ends_a_run_its_own_way_and_the_operator_stopping_does_not_end_it() -> None:
    assert outcome.stopped_by(StopCause.STOPPED) is None
    assert outcome.stopped_by(StopCause.CANCEL) == outcome.cancelled()
    assert outcome.stopped_by(StopCause.DEADLINE) == outcome.failed(
        Reason.DEADLINE_EXCEEDED, outcome.DEADLINE_MESSAGE
    )
    failure = Failure(Reason.RESULTS_NOT_COMMITTED, "checkpoint")
    assert outcome.stopped_by(StopCause.FAILURE, failure) == outcome.failed(
        Reason.RESULTS_NOT_COMMITTED, "checkpoint"
    )


def test_only_infrastructure_failures_with_a_retry_left_and_nothing_stopping_are_retried() -> None:
    died = outcome.failed(Reason.KERNEL_DIED, "gone")
    assert outcome.should_retry(died, attempt=1, retries=1, stopping=False)
    assert not outcome.should_retry(died, attempt=2, retries=1, stopping=False)
    assert not outcome.should_retry(died, attempt=1, retries=1, stopping=True)
    assert outcome.should_retry(outcome.failed(Reason.GATEWAY_LOST, "pod"), 1, 3, stopping=False)
    assert not outcome.should_retry(outcome.failed(Reason.CELL_ERROR, "bug"), 1, 3, stopping=False)
    assert not outcome.should_retry(outcome.cancelled(), 1, 3, stopping=False)


# -------------------------------------------------------------------------------- the progress book


class RecordingKube:
    def __init__(self, failures: int = 0, gone: bool = False) -> None:
        self.failures = failures
        self.gone = gone
        self.patches: list[dict[str, Any]] = []

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        if self.gone:
            raise NotFound(404, "NotFound", path)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("API server restarting")
        self.patches.append(patch["status"])
        return {}


def book_for(kube: RecordingKube) -> ProgressBook:
    body = {"metadata": {"name": "run", "namespace": "team", "uid": "u1", "generation": 3}}
    return ProgressBook(kube, body, interval=60.0)  # type: ignore[arg-type]


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(kopf, "info", lambda body, *, reason, message: seen.append(("info", reason)))
    monkeypatch.setattr(kopf, "warn", lambda body, *, reason, message: seen.append(("warn", reason)))
    monkeypatch.setattr(statuswriter, "FINAL_WRITE_MAX_DELAY", 0.0)
    return seen


async def test_the_final_status_is_written_until_it_lands_with_its_event_and_no_kernel(events) -> None:
    kube = RecordingKube(failures=2)
    book = book_for(kube)
    book.status.start_time = "2026-01-01T00:00:00Z"
    await book.finish(outcome.failed(Reason.CELL_ERROR, "cell 0 failed"))
    assert len(kube.patches) == 1
    final = kube.patches[0]
    assert (final["state"], final["reason"], final["kernel"]) == ("Failed", Reason.CELL_ERROR, None)
    conditions = {c["type"]: (c["status"], c["observedGeneration"]) for c in final["conditions"]}
    assert conditions == {"Progressing": ("False", 3), "Succeeded": ("False", 3)}
    assert "completionTime" in final and "duration" in final
    assert events == [("warn", Reason.CELL_ERROR)]


async def test_a_run_deleted_before_its_final_status_is_not_written_again_and_again(events) -> None:
    kube = RecordingKube(gone=True)
    book = book_for(kube)
    assert await book.writer.write_final({"state": "Succeeded"})
    assert kube.patches == []


def test_the_books_cells_stay_bounded_keeping_running_and_failed_cells() -> None:
    book = book_for(RecordingKube())
    count = MAX_CELL_ENTRIES + 100
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1") for _ in range(count)])
    book.init_cells(nb)
    failed_cell = nbformat.v4.new_code_cell("1/0")
    failed_cell.metadata["nbkube"] = {"state": "failed"}
    failed_cell.outputs = [
        nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="x", traceback=[])
    ]
    book.mark_from_cell(3, failed_cell)
    book.cell_running(4)
    status = book.status
    assert len(status.cells) == MAX_CELL_ENTRIES and status.cells_omitted == 100
    kept = {c.index: c.state for c in status.cells}
    assert kept[3] == CellState.FAILED and kept[4] == CellState.RUNNING
    assert (status.cells_done, status.progress, status.cells_total) == (1, f"1/{count}", count)
    assert book.cells_executed() == 2  # the failed cell and the one running


# ------------------------------------------------------------------------------ waiting for a kernel


class CapacityRegistry:
    """Every pod is at its kernel limit until `free` is set."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.free = asyncio.Event()
        self.tries = 0

    def has_ready_pod(self, namespace: str, environment: str) -> bool:
        return self.ready

    async def wait_for_pod(self, namespace: str, environment: str, timeout: float) -> bool:
        return self.ready

    async def acquire(self, namespace: str, environment: str) -> str:
        self.tries += 1
        if not self.free.is_set():
            raise GatewaysAtCapacity("2 of 2 kernels in use")
        return "lease"


async def test_work_waits_for_a_free_kernel_and_says_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from nbkube.kernelwork import kernelsource

    monkeypatch.setattr(kernelsource, "KERNEL_WAIT_FIRST_DELAY", 0.0)
    registry = CapacityRegistry()
    said: list[tuple[str, str]] = []

    async def on_waiting(reason: str, message: str) -> None:
        said.append((reason, message))
        registry.free.set()  # a kernel is released as soon as the user was told

    source = KernelSource(registry, "team", "py", wait_seconds=60)  # type: ignore[arg-type]
    stops, _ = make_stops()
    assert await source.acquire(stops, on_waiting) == "lease"
    assert [reason for reason, _ in said] == [Reason.WAITING_FOR_KERNEL]
    assert registry.tries == 2


async def test_an_environment_that_never_gets_ready_fails_with_what_its_ready_condition_says() -> None:
    async def detail() -> str:
        return "PackagesFailed: ERROR: No matching distribution found for nosuchpkg"

    said: list[str] = []

    async def on_waiting(reason: str, message: str) -> None:
        said.append(message)

    source = KernelSource(
        CapacityRegistry(ready=False),  # type: ignore[arg-type]
        "team",
        "py",
        wait_seconds=0,
        not_ready_detail=detail,
    )
    stops, _ = make_stops()
    failure = await source.acquire(stops, on_waiting)
    assert isinstance(failure, Failure) and failure.reason == Reason.GATEWAY_LOST
    assert "No matching distribution found for nosuchpkg" in failure.message
    assert "No matching distribution found for nosuchpkg" in said[0]
