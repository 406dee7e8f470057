"""The janitor's rules: what counts as left behind, and what is always kept."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nbkube.config import Settings
from nbkube.janitor import (
    GatewayView,
    Janitor,
    JanitorSettings,
    RunView,
    journal_files,
    orphaned_kernels,
    reclaimable_journals,
    reclaimable_kernels,
)
from nbkube.run.service import RunService

NOW = time.time()


def iso_ago(seconds: float) -> str:
    return (datetime.fromtimestamp(NOW, UTC) - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def kernel(
    kernel_id: str, *, connections: int = 0, idle: float = 600, state: str = "idle"
) -> dict[str, object]:
    return {
        "id": kernel_id,
        "connections": connections,
        "last_activity": iso_ago(idle),
        "execution_state": state,
    }


def test_only_unheld_unconnected_idle_kernels_are_reclaimed() -> None:
    kernels = [
        kernel("orphan"),
        kernel("held-by-a-run"),
        kernel("connected", connections=1),
        kernel("just-started", idle=5),
        kernel("busy-without-anyone", state="busy"),
        {"id": "no-connection-count", "last_activity": iso_ago(600)},
        {"connections": 0},
    ]
    orphans = dict.fromkeys(orphaned_kernels(kernels, {"held-by-a-run"}), NOW)
    assert reclaimable_kernels(kernels, orphans, idle_seconds=120, now=NOW) == ["orphan"]


def test_busy_kernels_are_reclaimed_only_after_sweeps_saw_them_orphaned_for_long_enough() -> None:
    kernels = [
        kernel("busy-orphan-for-long", state="busy"),
        kernel("busy-orphan-lately", state="busy"),
        kernel("busy-first-seen-now", state="busy"),
        kernel("busy-but-connected", state="busy", connections=1),
        kernel("busy-but-held", state="busy"),
    ]
    # when earlier sweeps first saw them orphaned (the connected and the held one were, long ago)
    first_seen = {
        "busy-orphan-for-long": NOW - 1900,
        "busy-orphan-lately": NOW - 600,
        "busy-but-connected": NOW - 7200,
        "busy-but-held": NOW - 7200,
    }
    orphans = orphaned_kernels(kernels, {"busy-but-held"})
    assert orphans == ["busy-orphan-for-long", "busy-orphan-lately", "busy-first-seen-now"]
    since = {k: first_seen.get(k, NOW) for k in orphans}
    found = reclaimable_kernels(kernels, since, 120, NOW, busy_seconds=1800)
    assert found == ["busy-orphan-for-long"]


def touch(path: Path, age: float, *, directory: bool = False) -> Path:
    if directory:
        path.mkdir()
        (path / "outputs.jsonl").write_text("{}\n")
    else:
        path.write_text("{}\n")
    os.utime(path, (NOW - age, NOW - age))
    return path


def test_journals_of_finished_runs_go_after_the_grace_and_of_unknown_runs_much_later(tmp_path: Path) -> None:
    states = {"running": True, "finished": False, "finished-recently": False}
    touch(tmp_path / "running.jsonl", 7200)
    finished = touch(tmp_path / "finished.jsonl", 120)
    finished_spill = touch(tmp_path / "finished.spill", 120, directory=True)
    touch(tmp_path / "finished-recently.jsonl", 10)
    deleted_long_ago = touch(tmp_path / "deleted-long-ago.jsonl", 7200)
    touch(tmp_path / "deleted-lately.jsonl", 600)
    touch(tmp_path / "notes.txt", 7200)
    settings = JanitorSettings(journal_grace_seconds=60, unknown_journal_seconds=3600)

    found = reclaimable_journals(journal_files(tmp_path), states.get, settings, NOW)

    assert found == sorted([finished, finished_spill, deleted_long_ago])
    assert journal_files(tmp_path / "missing") == []


async def test_a_journal_sweep_removes_files_and_spill_directories(tmp_path: Path) -> None:
    touch(tmp_path / "done.jsonl", 120)
    touch(tmp_path / "done.spill", 120, directory=True)
    touch(tmp_path / "live.jsonl", 120)
    runs = RunView(is_active=lambda uid: uid == "live", held_kernels=set)
    janitor = Janitor(runs, GatewayView(clients=list, in_use=set), tmp_path, JanitorSettings())

    assert await janitor.sweep_journals() == 2
    assert sorted(os.listdir(tmp_path)) == ["live.jsonl"]


def run_body(uid: str, state: str | None, kernel_id: str | None = None) -> dict[str, object]:
    status: dict[str, object] = {}
    if state:
        status["state"] = state
    if kernel_id:
        status["kernel"] = {"pod": "p", "address": "a", "kernelId": kernel_id, "sessionId": "s"}
    return {"metadata": {"uid": uid}, "status": status}


def test_the_run_service_tells_the_janitor_which_runs_are_live_and_which_kernels_they_hold() -> None:
    runs = RunService(kube=None, settings=Settings(), registry=None, results=None)  # type: ignore[arg-type]
    runs.observe("ADDED", run_body("new", None))
    runs.observe("ADDED", run_body("running", "Running", "k-running"))
    runs.observe("ADDED", run_body("done", "Succeeded", "k-done"))
    runs.observe("ADDED", run_body("gone", "Running", "k-gone"))
    runs.observe("DELETED", run_body("gone", "Running", "k-gone"))

    assert [runs.is_active(uid) for uid in ("new", "running", "done", "gone")] == [True, True, False, None]
    assert runs.held_kernels() == {"k-running"}

    runs.observe("MODIFIED", run_body("running", "Failed", "k-running"))
    assert runs.held_kernels() == set()
