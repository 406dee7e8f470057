"""A run's daemon never dies of an error in a callback, and a restarted one never runs a cell twice.

The driver runs here in-process with a scripted executor (no kernel), a recording API client and,
where it matters, the real results repositories on disk.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import kopf
import nbformat
import pytest
from nbkube.config import Settings
from nbkube.engine import CellResult, CellState, NotebookResult
from nbkube.kernelwork import journaled
from nbkube.kernelwork.journal import WorkJournal
from nbkube.results import ResultsRepositories
from nbkube.run.service import RunService

ENV_SPEC = {"image": "nbkube/kernel-python:dev"}


class FakeKube:
    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    async def get_or_none(self, path: str) -> dict[str, Any] | None:
        return {"spec": ENV_SPEC} if "/notebookenvironments/" in path else None

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        if path.endswith("/status"):
            self.statuses.append(patch["status"])
        return {}


class FakeConnection:
    kernel_id = "kernel-0000-0000"
    session_id = "session-1"

    async def close(self) -> None:
        pass


class FakeLease:
    namespace, environment, pod, address = "team", "py", "py-gw-0", "10.0.0.1:8888"
    connection = FakeConnection()
    kernel_id, session_id = connection.kernel_id, connection.session_id


class FakeRegistry:
    def __init__(self, adopt: bool = True) -> None:
        self.acquired = 0
        self.adoptable = adopt

    def has_ready_pod(self, namespace: str, environment: str) -> bool:
        return True

    async def wait_for_pod(self, namespace: str, environment: str, timeout: float) -> bool:
        return True

    async def acquire(self, namespace: str, environment: str) -> FakeLease:
        self.acquired += 1
        return FakeLease()

    async def adopt(self, *args: Any) -> FakeLease | None:
        return FakeLease() if self.adoptable else None

    def release(self, lease: FakeLease) -> None:
        pass


class ScriptedExecutor:
    """Runs every code cell from `start_index` through the driver's callbacks, as the engine does."""

    executed: list[int] = []

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self.callbacks = kwargs
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    async def execute_notebook(self, nb: Any, resume: Any = None, start_index: int = 0) -> NotebookResult:
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or index < start_index:
                continue
            if self._cancelled:
                return NotebookResult(nb, CellState.CANCELLED, failed_index=index)
            await self.callbacks["on_cell_start"](index, cell, f"m{index}")
            output = {"output_type": "stream", "name": "stdout", "text": f"{index}\n"}
            self.callbacks["on_output"](index, output)
            cell.outputs = [nbformat.from_dict(output)]
            cell.execution_count = index + 1
            ScriptedExecutor.executed.append(index)
            await self.callbacks["on_cell_end"](
                index, CellResult(index=index, cell_id=str(cell.get("id")), state=CellState.SUCCEEDED)
            )
            await asyncio.sleep(0.01)
        return NotebookResult(nb, CellState.SUCCEEDED)


class RecordingStore:
    """A results store whose checkpoints fail (as a full disk would make them)."""

    def __init__(self) -> None:
        self.finals: list[Any] = []

    async def commit_run(self, record: Any, notebook: Any, spills: Any, *, final: bool) -> Any:
        if not final:
            raise OSError(28, "No space left on device")
        self.finals.append((record, notebook))
        from nbkube.results import CommitInfo

        return CommitInfo("c" * 40, record.notebook_path)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    seen: list[tuple[str, str, str]] = []
    monkeypatch.setattr(kopf, "info", lambda body, *, reason, message: seen.append(("info", reason, message)))
    monkeypatch.setattr(kopf, "warn", lambda body, *, reason, message: seen.append(("warn", reason, message)))
    monkeypatch.setattr(journaled, "NotebookExecutor", ScriptedExecutor)

    async def no_kernel_setup(connection: Any, setup: Any) -> bool:  # no kernel here to set up
        return True

    monkeypatch.setattr(journaled.kernel_setup, "apply_setup", no_kernel_setup)
    ScriptedExecutor.executed = []
    return seen


def body(name: str, cells: int, status: dict[str, Any] | None = None, **spec: Any) -> kopf.Body:
    return {  # type: ignore[return-value]
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{len(name)}", "generation": 1},
        "spec": {
            "environmentRef": {"name": "py"},
            "notebook": {"cells": [{"source": f"print({i})"} for i in range(cells)]},
            **spec,
        },
        "status": status or {},
    }


def service(tmp_path: Path, results: Any, registry: FakeRegistry | None = None) -> RunService:
    settings = Settings(data_dir=tmp_path, checkpoint_every_cells=2, status_interval_seconds=0.05)
    return RunService(FakeKube(), settings, registry or FakeRegistry(), results)  # type: ignore[arg-type]


class NeverStopped:
    """kopf.DaemonStopped as the driver uses it: false until the operator stops (never, here)."""

    def __bool__(self) -> bool:
        return False

    async def wait(self) -> None:
        await asyncio.Event().wait()


async def drive(svc: RunService, run: kopf.Body) -> dict[str, Any]:
    await asyncio.wait_for(svc.drive(run, NeverStopped()), 30)  # type: ignore[arg-type]
    for cleanup in svc._cleanups:  # the journal's removal a grace period later
        cleanup.cancel()
    return svc.kube.statuses[-1]  # type: ignore[attr-defined]


async def test_a_failing_checkpoint_fails_the_run_with_a_reason_and_keeps_what_ran(tmp_path, events) -> None:
    store = RecordingStore()
    status = await drive(service(tmp_path, store), body("checkpointed", 6))

    assert (status["state"], status["reason"]) == ("Failed", "ResultsNotCommitted")
    assert "checkpoint" in status["message"] and "No space left" in status["message"]
    assert ("warn", "ResultsNotCommitted", status["message"]) in events
    [(record, notebook)] = store.finals  # the final commit still keeps what ran, marked failed
    assert (record.state, record.reason) == ("Failed", "ResultsNotCommitted")
    assert notebook.cells[0].outputs[0]["text"] == "0\n"


async def test_a_journal_that_cannot_be_written_fails_the_run_instead_of_its_daemon(
    tmp_path, events, monkeypatch
) -> None:
    async def broken(self: WorkJournal, attempt: int, index: int, cell: dict[str, Any]) -> None:
        if index == 1:
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(WorkJournal, "record", broken)
    status = await drive(service(tmp_path, RecordingStore()), body("journaled", 4))

    assert (status["state"], status["reason"]) == ("Failed", "JournalNotWritten")
    assert "journaling cell 1" in status["message"]
    assert any(kind == "warn" and reason == "JournalNotWritten" for kind, reason, _ in events)
    assert ScriptedExecutor.executed[:2] == [0, 1] and len(ScriptedExecutor.executed) <= 3


async def test_a_run_named_like_a_lock_file_checkpoints_and_commits(tmp_path, events) -> None:
    async with ResultsRepositories(tmp_path / "results", fsync=False) as results:
        status = await drive(service(tmp_path, results), body("nightly.lock", 5))
        assert (status["state"], status["reason"], status["attempt"]) == ("Succeeded", "Succeeded", 1)
        result = status["result"]
        assert result["final"] and result["path"].startswith("team/nightly.lock_")
        nb = nbformat.reads((await results.read_file("team", result["path"])).decode(), as_version=4)
        assert [c.outputs[0]["text"] for c in nb.cells] == [f"{i}\n" for i in range(5)]
        assert nb.metadata["nbkube"]["run"] == "nightly.lock"
    assert ScriptedExecutor.executed == [0, 1, 2, 3, 4]
    assert [r for _, r, _ in events if r == "ResultsCommitted"] == ["ResultsCommitted"]


async def test_a_restarted_daemon_whose_kernel_is_gone_does_not_run_journaled_cells_again(
    tmp_path, events
) -> None:
    uid = f"uid-{len('restarted')}"
    journal = WorkJournal(Settings(data_dir=tmp_path).journal_dir, uid)
    for index in (0, 1):
        await journal.started(1, index, f"m{index}")
        out = [{"output_type": "stream", "name": "stdout", "text": f"{index}\n"}]
        cell = {"cell_type": "code", "source": f"print({index})", "metadata": {}, "outputs": out}
        await journal.record(1, index, {**cell, "execution_count": index + 1})
    await journal.started(1, 2, "m2")
    running = {
        "state": "Running",
        "attempt": 1,
        "startTime": "2026-01-01T00:00:00Z",
        "kernel": {"pod": "py-gw-0", "address": "a", "kernelId": "gone-kernel", "sessionId": "s"},
    }
    store = RecordingStore()
    registry = FakeRegistry(adopt=False)
    status = await drive(service(tmp_path, store, registry), body("restarted", 4, running, retries=0))

    assert ScriptedExecutor.executed == [] and registry.acquired == 0
    assert (status["state"], status["reason"], status["attempt"]) == ("Failed", "KernelDied", 1)
    assert "retries=0" in status["message"]
    [(record, notebook)] = store.finals
    assert (record.state, record.reason) == ("Failed", "KernelDied")
    assert [c.get("outputs") for c in notebook.cells[:2]] == [
        [{"output_type": "stream", "name": "stdout", "text": "0\n"}],
        [{"output_type": "stream", "name": "stdout", "text": "1\n"}],
    ]


async def test_a_sweep_child_the_api_server_refuses_ends_the_sweep_invalid_spec_at_once(
    tmp_path, events
) -> None:
    from nbkube.kube import KubeError

    class RefusingKube(FakeKube):
        created = 0

        async def list(self, path: str, selector: str) -> list[dict[str, Any]]:
            assert len(selector.split("=", 1)[1]) <= 63
            return []

        async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
            RefusingKube.created += 1
            raise KubeError(422, "Invalid", 'NotebookRun "x" is invalid: spec.parameters: Too many')

    svc = service(tmp_path, None)
    svc.kube = RefusingKube()  # type: ignore[assignment]
    run = body("s" * 253, 1, matrix={"x": [1, 2]}, parallelism=1)
    status = await drive(svc, run)

    assert (status["state"], status["reason"]) == ("Failed", "InvalidSpec")
    assert "refused by the API server" in status["message"] and "Too many" in status["message"]
    assert RefusingKube.created == 1
    assert ("warn", "InvalidSpec", status["message"]) in events
