"""Branches beside main (a session's history): started at main or at any commit, one commit per change
that moves only that branch, refused when the branch moved, read back as stock git reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import executed_notebook, git, record
from nbkube.results import ResultsStore, StaleBranch


async def test_a_branch_of_an_empty_repository_gives_main_a_first_commit_clones_can_check_out(
    store: ResultsStore,
) -> None:
    head = await store.start_branch("sessions/s/0000aaaa")
    assert head is not None and git(store.git_dir, "rev-parse", "main") == head + "\n"
    assert await store.start_branch("sessions/s/0000aaaa") == head  # started once, then found


async def test_each_change_is_one_commit_on_the_branch_only_and_a_stale_parent_is_refused(
    store: ResultsStore, tmp_path: Path
) -> None:
    run = await store.commit_run(record(1), executed_notebook(), {}, final=True)
    base = await store.start_branch("sessions/s/0000aaaa", run.commit)
    assert base == run.commit
    spill = tmp_path / "spill.jsonl"
    spill.write_bytes(b'{"output": 1}\n')
    first = await store.commit_to_branch(
        "sessions/s/0000aaaa", {"default/_sessions/s/nb.ipynb": b"{}\n"}, "insert cell a\n", parent=base
    )
    second = await store.commit_to_branch(
        "sessions/s/0000aaaa",
        {"default/_sessions/s/nb.ipynb": b'{"x": 1}\n', "default/_sessions/s/artifacts/op-1.jsonl": spill},
        "execute a: succeeded\n\nNbkube-Operation-Number: 2\n",
        parent=first,
    )
    with pytest.raises(StaleBranch):
        await store.commit_to_branch(
            "sessions/s/0000aaaa", {"default/_sessions/s/x": b"1"}, "late\n", parent=first
        )
    assert git(store.git_dir, "rev-parse", "main").strip() == run.commit  # main did not move
    assert await store.read_file("default/_sessions/s/artifacts/op-1.jsonl", second) == b'{"output": 1}\n'
    assert await store.read_file(run.path, second)  # the branch holds what it started from
    log = await store.branch_log("sessions/s/0000aaaa", limit=10)
    assert [c.commit for c in log[:3]] == [second, first, run.commit]
    assert (
        log[0].message.splitlines()[0] == "execute a: succeeded" and "Operation-Number: 2" in log[0].message
    )
    git(store.git_dir, "fsck", "--strict")
