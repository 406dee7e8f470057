"""Kill a process (and its git children) while it commits; the repository must stay whole."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest
from commit_loop import notebook, run_record
from conftest import git
from nbkube.results import CommitInfo, ResultsRepositories, ResultsStore

HELPER = Path(__file__).with_name("commit_loop.py")


async def _run_and_kill(root: Path, first: int, delay: float, kind: str) -> dict[int, str]:
    """Start the helper, SIGKILL its whole process group `delay` s after it is ready; its reported finals."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        str(root),
        str(first),
        kind,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 120)).strip() == b"ready"
    await asyncio.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)  # the operator's pod dies: python and every git child at once
    out = await proc.stdout.read()
    await proc.wait()
    finals: dict[int, str] = {}
    for line in out.decode().splitlines():
        _, i, commit = line.split()
        finals[int(i)] = commit
    return finals


def _final_commits(root: Path, uid: str) -> list[str]:
    return git(
        root,
        "log",
        "--format=%H",
        "--all-match",
        f"--grep=Nbkube-Run-Uid: {uid}$",
        "--grep=Nbkube-Final: true",
        "main",
    ).split()


@pytest.mark.parametrize("kind", ["store", "repositories"])
async def test_killed_writer_leaves_a_clean_repository_and_each_final_lands_once(
    tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "results"
    git_dir = root / "default.git" if kind == "repositories" else root
    rng = random.Random()
    next_run = 0
    reported: dict[int, str] = {}
    for cycle in range(5):
        delay = rng.uniform(0.05, 0.8)
        finals = await _run_and_kill(root, next_run, delay, kind)
        reported.update(finals)
        in_flight = max(finals, default=next_run - 1) + 1  # the run the helper was committing when killed

        if git_dir.exists():
            git(git_dir, "fsck", "--strict", "--no-dangling")
        if kind == "repositories":
            opened: ResultsRepositories | ResultsStore = ResultsRepositories(
                root, fsync=False, lock_timeout=30
            )
        else:
            opened = ResultsStore(root, fsync=False, lock_timeout=30)
        async with opened as repositories:
            # what the restarted operator does: commit the in-flight run's final result again
            record = run_record(in_flight, True)
            retried = await repositories.commit_run(record, notebook(in_flight), final=True)
            again = await repositories.commit_run(record, notebook(in_flight), final=True)
            assert again == retried, f"cycle {cycle} (killed after {delay:.3f}s)"
            store = await repositories.repository("default") if kind == "repositories" else repositories
            assert isinstance(store, ResultsStore)
            assert _final_commits(git_dir, f"loop-uid-{in_flight}") == [retried.commit]
            for i, commit in finals.items():
                assert await store.find_final(f"loop-uid-{i}") == CommitInfo(
                    commit, f"default/loop-{i}/loop.ipynb"
                )
                assert _final_commits(git_dir, f"loop-uid-{i}") == [commit], f"cycle {cycle}, run {i}"
            assert (await store.read_file(retried.path)).startswith(b"{")
        git(git_dir, "fsck", "--strict", "--no-dangling")
        next_run = in_flight + 1

    assert len(reported) > 0  # the helper did commit between kills
    assert not list(root.rglob("*.lock"))
