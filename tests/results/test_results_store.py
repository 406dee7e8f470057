"""The results store against a real git repository, checked with stock git."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import nbformat
import pytest
from conftest import executed_notebook, git, record
from nbkube.results import (
    CommitInfo,
    InvalidNotebookError,
    ResultsRepositories,
    ResultsStore,
    RunRecord,
    StoreClosedError,
    StoreLockedError,
)
from nbkube.results.__main__ import main as cli_main
from nbkube.results._git import TreeEntry, object_id, tree_bytes


async def test_final_result_lands_at_a_predictable_path_with_nbkube_metadata(store: ResultsStore) -> None:
    nb = executed_notebook()
    info = await store.commit_run(record(1, reason="Completed"), nb, final=True)

    assert info.path == "default/analysis-1/analysis.ipynb"
    assert git(store.root, "rev-parse", "main").strip() == info.commit
    stored = nbformat.reads(git(store.root, "show", f"{info.commit}:{info.path}"), as_version=4)
    nbformat.validate(stored)
    assert [c.outputs[0].text for c in stored.cells] == ["0\n", "1\n", "2\n"]
    assert [c.execution_count for c in stored.cells] == [1, 2, 3]
    assert stored.cells[0].metadata["execution"] == {"iopub.execute_input": "2024-01-01T00:00:00Z"}
    assert stored.metadata["nbkube"] == {
        "run": "analysis-1",
        "namespace": "default",
        "uid": "0000-uid-1",
        "environment": "py",
        "parameters": {"alpha": 0.3, "i": 1},
        "attempt": 1,
        "state": "Succeeded",
        "reason": "Completed",
        "progress": None,
        "final": True,
    }
    assert "nbkube" not in nb.metadata  # the caller's notebook is left alone


async def test_commit_message_and_author_identify_the_run(store: ResultsStore) -> None:
    info = await store.commit_run(
        record(7, attempt=2, state="Failed", reason="CellError"), executed_notebook(), final=True
    )
    subject, author = git(store.root, "log", "-1", "--format=%s%n%an <%ae>", info.commit).splitlines()
    assert subject == "nbkube: default/analysis-7 Failed (attempt 2)"
    assert author == "nbkube (default/analysis-7) <0000-uid-7@default.nbkube>"
    trailers = git(store.root, "log", "-1", "--format=%(trailers:only,unfold)", info.commit)
    assert "Nbkube-Run-Uid: 0000-uid-7\n" in trailers
    assert "Nbkube-Final: true\n" in trailers
    assert "Nbkube-Path: default/analysis-7/analysis.ipynb\n" in trailers


async def test_repository_is_bare_fsck_clean_and_readable_by_stock_git(store: ResultsStore) -> None:
    await store.commit_run(record(1), executed_notebook(), {"plot.png": b"\x89PNG..."}, final=True)
    await store.commit_run(record(2, namespace="team-a"), executed_notebook(), final=True)
    assert git(store.root, "rev-parse", "--is-bare-repository").strip() == "true"
    assert git(store.root, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    git(store.root, "fsck", "--strict", "--no-dangling")
    files = git(store.root, "ls-tree", "-r", "--name-only", "main").split()
    assert files == [
        "default/analysis-1/analysis.ipynb",
        "default/analysis-1/nbkube.json",
        "default/analysis-1/outputs/plot.png",
        "team-a/analysis-2/analysis.ipynb",
        "team-a/analysis-2/nbkube.json",
    ]


async def test_committing_the_same_final_result_twice_makes_one_commit(store: ResultsStore) -> None:
    first = await store.commit_run(record(1), executed_notebook(), final=True)
    second = await store.commit_run(record(1), executed_notebook(5), final=True)
    assert second == first
    assert git(store.root, "rev-list", "--count", "main").strip() == "1"
    assert await store.find_final("0000-uid-1") == first


async def test_final_commit_is_found_after_a_crash_between_moving_main_and_the_final_ref(
    tmp_path: Path,
) -> None:
    root = tmp_path / "results"
    async with ResultsStore(root, fsync=False) as store:
        first = await store.commit_run(record(1), executed_notebook(), final=True)
        await store.commit_run(record(2), executed_notebook(), final=True)  # main moved on since
    git(root, "update-ref", "-d", "refs/nbkube/final/0000-uid-1")  # as if killed in between

    async with ResultsStore(root, fsync=False) as store:
        assert await store.find_final("0000-uid-1") is None
        again = await store.commit_run(record(1), executed_notebook(), final=True)
        assert again == first
        assert await store.find_final("0000-uid-1") == first
    assert git(root, "rev-list", "--count", "main").strip() == "2"
    assert git(root, "rev-parse", "refs/nbkube/final/0000-uid-1").strip() == first.commit  # repaired


async def test_checkpoints_commit_partial_results_then_the_final_one(store: ResultsStore) -> None:
    rec = record(3, state="Running", progress="1/3")
    c1 = await store.commit_run(rec, executed_notebook(1), final=False)
    c2 = await store.commit_run(record(3, state="Running", progress="2/3"), executed_notebook(2), final=False)
    assert await store.find_final(rec.uid) is None
    final = await store.commit_run(record(3), executed_notebook(3), final=True)
    late = await store.commit_run(
        record(3, state="Running", progress="2/3"), executed_notebook(2), final=False
    )

    assert late == final  # a checkpoint arriving after the final result does not overwrite it
    assert git(store.root, "rev-list", "main").split() == [final.commit, c2.commit, c1.commit]
    assert git(store.root, "log", "-1", "--format=%s", c1.commit).strip() == (
        "nbkube: default/analysis-3 checkpoint 1/3 (attempt 1)"
    )
    assert len(nbformat.reads(await store.read_file(final.path), as_version=4).cells) == 3
    assert len(nbformat.reads(await store.read_file(c1.path, c1.commit), as_version=4).cells) == 1


async def test_invalid_notebook_is_refused_and_nothing_is_committed(store: ResultsStore) -> None:
    nb = executed_notebook()
    nb.cells[0]["cell_type"] = "not-a-cell-type"
    with pytest.raises(InvalidNotebookError):
        await store.commit_run(record(1), nb, final=True)
    assert store.head is None
    assert list((store.root / "nbkube-tmp").iterdir()) == []


async def test_spills_are_stored_beside_the_notebook_and_capped_per_run(tmp_path: Path) -> None:
    big = tmp_path / "stdout.txt"
    big.write_bytes(b"x" * 5000)
    async with ResultsStore(tmp_path / "results", max_spill_bytes_per_run=3000, fsync=False) as store:
        info = await store.commit_run(
            record(1),
            executed_notebook(),
            {"a-small.bin": b"\x00\x01" * 500, "b/stdout.txt": big},
            final=True,
        )
        small = await store.read_file("default/analysis-1/outputs/a-small.bin", info.commit)
        cut = await store.read_file("default/analysis-1/outputs/b/stdout.txt", info.commit)
        run = json.loads(await store.read_file("default/analysis-1/nbkube.json", info.commit))

    assert small == b"\x00\x01" * 500
    assert cut.startswith(b"x" * 2000) and cut[2000:2001] == b"\n"
    assert b"[nbkube: output truncated: 2000 of 5000 bytes kept" in cut
    assert run["spills"] == {
        "a-small.bin": {"bytes": 1000, "stored": 1000, "truncated": False},
        "b/stdout.txt": {"bytes": 5000, "stored": 2000, "truncated": True},
    }


async def test_spill_names_cannot_escape_the_run_directory(store: ResultsStore) -> None:
    for name in ("../evil", "/etc/passwd", "a/../../b", "x\ny"):
        with pytest.raises(ValueError):
            await store.commit_run(record(1), executed_notebook(), {name: b"1"}, final=True)
    assert store.head is None


async def test_fifty_concurrent_runs_all_land(store: ResultsStore) -> None:
    infos = await asyncio.gather(
        *(
            store.commit_run(record(i), executed_notebook(), {"o.txt": f"{i}".encode()}, final=True)
            for i in range(50)
        )
    )
    assert len({i.commit for i in infos}) == 50
    runs = await store.list_runs()
    assert sorted(r.name for r in runs) == sorted(f"analysis-{i}" for i in range(50))
    assert all(r.final and r.state == "Succeeded" for r in runs)
    assert git(store.root, "rev-list", "--count", "main").strip() == "50"
    subjects = git(store.root, "log", "--format=%s", "main").splitlines()
    assert sorted(subjects) == sorted(
        f"nbkube: default/analysis-{i} Succeeded (attempt 1)" for i in range(50)
    )
    for i in (0, 17, 49):
        assert await store.read_file(f"default/analysis-{i}/outputs/o.txt") == f"{i}".encode()
        assert await store.find_final(f"0000-uid-{i}") == infos[i]
    git(store.root, "fsck", "--strict", "--no-dangling")


async def test_list_runs_filters_by_namespace(store: ResultsStore) -> None:
    await store.commit_run(record(1), executed_notebook(), final=True)
    await store.commit_run(record(2, namespace="team-a", state="Running"), executed_notebook(), final=False)
    await store.add_notebook("_notebooks/source.ipynb", executed_notebook(), "upload")
    runs = await store.list_runs("team-a")
    assert [(r.namespace, r.name, r.final, r.state, r.path) for r in runs] == [
        ("team-a", "analysis-2", False, "Running", "team-a/analysis-2/analysis.ipynb")
    ]
    assert [r.name for r in await store.list_runs()] == ["analysis-1", "analysis-2"]


async def test_notebooks_added_to_the_repository_can_be_loaded_for_runs(store: ResultsStore) -> None:
    source = executed_notebook(2)
    info = await store.add_notebook("_notebooks/team/analysis.ipynb", source, "upload analysis")
    assert git(store.root, "log", "-1", "--format=%s", info.commit).strip() == "upload analysis"
    loaded = await store.load_notebook("_notebooks/team/analysis.ipynb")
    assert [c.source for c in loaded.cells] == ["print(0)", "print(1)"]
    assert await store.add_notebook("_notebooks/team/analysis.ipynb", source) == info  # unchanged: no commit
    # an executed result can be the source of another run as well
    run = await store.commit_run(record(1), executed_notebook(), final=True)
    assert len((await store.load_notebook(run.path, run.commit)).cells) == 3


async def test_add_notebook_refuses_paths_that_could_collide_with_runs(store: ResultsStore) -> None:
    for path in ("default/analysis.ipynb", "_notebooks/x.txt", "analysis.ipynb", "_n/../x.ipynb"):
        with pytest.raises(ValueError):
            await store.add_notebook(path, executed_notebook())


async def test_loading_a_missing_or_broken_notebook_raises(store: ResultsStore) -> None:
    with pytest.raises(FileNotFoundError):
        await store.load_notebook("_notebooks/missing.ipynb")
    await store.commit_run(record(1), executed_notebook(), {"not-a-notebook.ipynb": b"{oops"}, final=True)
    with pytest.raises(InvalidNotebookError):
        await store.load_notebook("default/analysis-1/outputs/not-a-notebook.ipynb")


async def test_read_file_reports_missing_paths_and_refs(store: ResultsStore) -> None:
    info = await store.commit_run(record(1), executed_notebook(), final=True)
    with pytest.raises(FileNotFoundError):
        await store.read_file("default/analysis-1/nope.ipynb")
    with pytest.raises(FileNotFoundError):
        await store.read_file(info.path, "0" * 40)
    with pytest.raises(ValueError):
        await store.read_file(info.path, "--output=/tmp/x")
    assert await store.resolve("main") == info.commit


async def test_stale_locks_of_a_dead_writer_never_block_commits(tmp_path: Path) -> None:
    root = tmp_path / "results"
    async with ResultsStore(root, fsync=False) as store:
        await store.commit_run(record(1), executed_notebook(), final=True)
    for debris in ("refs/heads/main.lock", "packed-refs.lock", "HEAD.lock", "index.lock"):
        (root / debris).write_text("left by a killed git\n")
    (root / "refs/nbkube/final/0000-uid-2.lock").write_text("")
    half = root / "objects" / "ab" / "tmp_obj_XXXX"
    half.parent.mkdir(exist_ok=True)
    half.write_bytes(b"\x78\x01half")

    async with ResultsStore(root, fsync=False) as store:
        info = await store.commit_run(record(2), executed_notebook(), final=True)
        assert await store.find_final("0000-uid-2") == info
    assert not half.exists() and not (root / "refs/heads/main.lock").exists()
    git(root, "fsck", "--strict", "--no-dangling")


async def test_a_second_writer_is_refused_while_the_first_is_open(store: ResultsStore) -> None:
    with pytest.raises(StoreLockedError):
        await ResultsStore(store.root, lock_timeout=0.2).open()
    await store.commit_run(record(1), executed_notebook(), final=True)  # the first still writes


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = await ResultsStore(tmp_path / "r").open()
    await store.close()
    with pytest.raises(StoreClosedError):
        await store.commit_run(record(1), executed_notebook(), final=True)


async def test_prune_removes_old_runs_keeps_the_newest_and_shrinks_the_repository(
    store: ResultsStore,
) -> None:
    blob = os.urandom(200_000)  # incompressible, so the size change is visible
    infos: dict[int, CommitInfo] = {}
    for i in range(6):
        infos[i] = await store.commit_run(
            record(i), executed_notebook(), {"data.bin": blob + bytes([i])}, final=True
        )
    await store.commit_run(record(9, namespace="other"), executed_notebook(), final=True)
    before = _repo_bytes(store.root)

    result = await store.prune(keep_last=2, namespace="default")

    assert sorted(result.removed) == [f"default/analysis-{i}" for i in range(4)]
    assert [r.name for r in await store.list_runs()] == ["analysis-4", "analysis-5", "analysis-9"]
    assert git(store.root, "rev-list", "--count", "main").strip() == "1"
    assert await store.find_final("0000-uid-0") is None
    kept = await store.find_final("0000-uid-5")
    assert kept == CommitInfo(result.commit or "", infos[5].path)
    assert (await store.read_file(infos[5].path, kept.commit)).startswith(b"{")
    assert await store.find_final("0000-uid-9") is not None
    git(store.root, "fsck", "--strict", "--no-dangling")
    assert _repo_bytes(store.root) < before - 3 * 200_000
    # later commits stack on the squashed history
    after = await store.commit_run(record(10), executed_notebook(), final=True)
    assert git(store.root, "rev-list", "--count", after.commit).strip() == "2"


async def test_prune_by_age_spares_recent_runs(store: ResultsStore) -> None:
    await store.commit_run(record(1), executed_notebook(), final=True)
    await store.commit_run(record(2), executed_notebook(), final=True)
    assert (await store.prune(older_than=timedelta(days=1))).removed == []
    result = await store.prune(older_than=timedelta(days=1), keep_last=1, now=time.time() + 3 * 86400)
    assert result.removed == ["default/analysis-1"]
    assert [r.name for r in await store.list_runs()] == ["analysis-2"]


def test_run_record_validates_names_and_completes_the_notebook_file_name() -> None:
    rec = RunRecord(namespace="default", name="a", uid="u-1", notebook="analysis")
    assert rec.notebook_path == "default/a/analysis.ipynb"
    for bad in (
        {"namespace": "a/b"},
        {"name": "a/b"},
        {"uid": "x y"},
        {"notebook": "a/b.ipynb"},
        {"namespace": "_x"},
    ):
        with pytest.raises(ValueError):
            RunRecord(**{"namespace": "default", "name": "a", "uid": "u-1", "notebook": "n", **bad})


async def test_names_git_or_a_clone_would_refuse_are_committed_under_safe_names_and_clone(
    store: ResultsStore, tmp_path: Path
) -> None:
    """A run named `nightly.lock`, a 253-character ConfigMap key as the notebook (259 bytes with
    .ipynb), notebook names with a leading dot or spelling `.git`: all commit, `git fsck --strict`
    finds nothing, and a stock `git clone` checks every file out."""
    key = "k" * 253
    cases = [
        ("nightly.lock", "notebook.ipynb"),
        ("long-key", key),
        ("dot", ".hidden.ipynb"),
        ("dotgit", ".git"),
        ("ntfs", "GIT~1"),
        ("x" * 253, "analysis.ipynb"),
    ]
    infos = []
    for i, (name, notebook) in enumerate(cases):
        rec = RunRecord(namespace="default", name=name, uid=f"u-{i}", notebook=notebook)
        infos.append(await store.commit_run(rec, executed_notebook(), final=True))
        assert await store.commit_run(rec, executed_notebook(), final=True) == infos[-1]  # idempotent
    paths = [info.path for info in infos]
    assert paths[0].startswith("default/nightly.lock_") and paths[0].endswith("/notebook.ipynb")
    assert paths[1].startswith(f"default/long-key/{'k' * 200}") and paths[1].endswith(".ipynb")
    assert paths[5] == f"default/{'x' * 253}/analysis.ipynb"
    for path in paths:
        assert all(len(part.encode()) <= 255 and not part.startswith(".") for part in path.split("/")), path
        assert not path.endswith(".lock") and "/.git" not in path.lower()
        stored = nbformat.reads((await store.read_file(path)).decode(), as_version=4)
        assert stored.metadata["nbkube"]["run"] in {name for name, _ in cases}
    again = RunRecord(namespace="default", name="nightly.lock", uid="u-0", notebook="notebook.ipynb")
    assert again.notebook_path == paths[0]  # the same name maps to the same place, every time
    listed = {r.name: r for r in await store.list_runs()}
    assert listed["nightly.lock"].directory == paths[0].split("/")[1]
    await asyncio.to_thread(git, store.root, "fsck", "--strict")
    dest = tmp_path / "clone"
    clone = await asyncio.create_subprocess_exec("git", "clone", "--quiet", str(store.root), str(dest))
    assert await clone.wait() == 0
    for path in paths:
        assert (dest / path).is_file(), path
    assert (await store.prune(keep_last=0)).removed  # mapped directories are found and removed too
    assert await store.list_runs() == []


def test_maintenance_cli_lists_prunes_and_checks_every_namespaces_repository(tmp_path: Path) -> None:
    async def seed() -> None:
        async with ResultsRepositories(tmp_path / "r", fsync=False) as repositories:
            for i in range(3):
                await repositories.commit_run(record(i), executed_notebook(), final=True)
                await repositories.commit_run(record(i, namespace="team-a"), executed_notebook(), final=True)

    asyncio.run(seed())
    cli = [sys.executable, "-m", "nbkube.results"]
    root = ["--root", str(tmp_path / "r")]
    pruned = subprocess.run(
        [*cli, "prune", *root, "--keep-last", "2", "--namespace", "team-a"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert pruned.stdout.startswith("team-a: removed 1 runs")
    pruned = subprocess.run(
        [*cli, "prune", *root, "--keep-last", "1"], capture_output=True, text=True, check=True
    )
    assert pruned.stdout.splitlines()[0].startswith("default: removed 2 runs")
    assert "team-a: removed 1 runs" in pruned.stdout  # each namespace keeps its newest
    listing = subprocess.run([*cli, "list", *root], capture_output=True, text=True, check=True)
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("default/analysis-2\tSucceeded\tfinal=True\t0000-uid-2")
    assert lines[1].startswith("team-a/analysis-2\tSucceeded\tfinal=True\t0000-uid-2")
    assert len(lines) == 2
    checked = subprocess.run([*cli, "fsck", *root], check=True, capture_output=True, text=True)
    assert "default: " in checked.stdout and "team-a: " in checked.stdout
    with pytest.raises(SystemExit) as refused:
        cli_main(["prune", *root])  # neither --older-than nor --keep-last
    assert refused.value.code == 2


def _repo_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "objects").rglob("*") if p.is_file())


async def test_cancelled_caller_still_gets_its_result_committed(store: ResultsStore) -> None:
    queued = asyncio.Event()
    put = store._writer._queue.put_nowait

    def put_and_tell(item: object) -> None:
        put(item)  # type: ignore[arg-type]
        queued.set()

    store._writer._queue.put_nowait = put_and_tell  # type: ignore[method-assign]
    async with store._repo.write_lock:  # hold the writer back so the caller is surely still waiting
        task = asyncio.create_task(store.commit_run(record(1), executed_notebook(), final=True))
        await queued.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()
    await store.close()  # close() waits for everything queued
    subject = git(store.root, "log", "-1", "--format=%s", "main").strip()
    assert subject == "nbkube: default/analysis-1 Succeeded (attempt 1)"


def test_tree_ids_match_what_git_computes_for_tricky_names(tmp_path: Path) -> None:
    """We hash trees ourselves; git's own mktree must agree, including its "dir sorts as dir/" rule."""
    root = tmp_path / "r"
    subprocess.run(["git", "init", "-q", "--bare", str(root)], check=True)
    blob = git(root, "hash-object", "-w", "--stdin", input="x").strip()
    sub = git(root, "mktree", input=f"100644 blob {blob}\tf\n").strip()
    entries = {
        "a": TreeEntry("100644", "blob", blob),
        "a-b": TreeEntry("100644", "blob", blob),
        "a.b": TreeEntry("040000", "tree", sub),
        "a0": TreeEntry("100644", "blob", blob),
        "ab": TreeEntry("040000", "tree", sub),
        "a b": TreeEntry("100644", "blob", blob),
        "ü.ipynb": TreeEntry("100644", "blob", blob),
    }
    entries |= {
        "foo": TreeEntry("040000", "tree", sub),  # sorts as "foo/": after "foo-bar" and "foo.txt"
        "foo-bar": TreeEntry("100644", "blob", blob),
        "foo.txt": TreeEntry("100644", "blob", blob),
    }
    listing = "".join(f"{e.mode} {e.type} {e.oid}\t{name}\0" for name, e in entries.items())
    expected = git(root, "mktree", "-z", input=listing).strip()
    assert object_id("tree", tree_bytes(entries)) == expected
    assert object_id("blob", b"x") == blob


async def test_one_bad_request_in_a_batch_does_not_sink_the_others(
    store: ResultsStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spill = tmp_path / "changing.txt"
    spill.write_bytes(b"before")
    bad_req = await asyncio.to_thread(
        store._writer.prepare_run, record(1), executed_notebook(), {"o": spill}, True, 0.0
    )
    good_req = await asyncio.to_thread(
        store._writer.prepare_run, record(2), executed_notebook(), {}, True, 0.0
    )
    spill.write_bytes(b"after, and longer")  # the bytes git reads no longer match what was hashed
    # both are queued before the writer wakes up, so they form one batch
    tasks = [
        asyncio.create_task(store._writer.submit(bad_req)),
        asyncio.create_task(store._writer.submit(good_req)),
    ]
    bad, good = await asyncio.gather(*tasks, return_exceptions=True)

    assert "results batch of 2 failed" in caplog.text
    assert isinstance(bad, Exception) and "other object ids" in str(bad)
    assert isinstance(good, CommitInfo) and await store.find_final("0000-uid-2") == good
    assert [r.name for r in await store.list_runs()] == ["analysis-2"]
    git(store.root, "fsck", "--strict", "--no-dangling")


async def test_a_commit_submitted_during_the_last_step_of_close_resolves(tmp_path: Path) -> None:
    """close() drains the queue, stops the writer, then stops the git processes: a commit_run that
    arrives in that last step must not wait forever on a writer that is gone."""
    store = await ResultsStore(tmp_path / "results", fsync=False).open()
    await store.commit_run(record(1), executed_notebook(), final=True)
    release = store.release_processes
    late: list[asyncio.Task[CommitInfo]] = []

    async def release_with_a_late_commit() -> None:
        late.append(asyncio.create_task(store.commit_run(record(2), executed_notebook(), final=True)))
        await asyncio.sleep(0.2)  # it is prepared and submitted while close() is still running
        await release()

    store.release_processes = release_with_a_late_commit  # type: ignore[method-assign]
    await store.close()
    with pytest.raises(StoreClosedError):
        await asyncio.wait_for(late[0], 5)
    assert store.running_processes() == 0
    async with ResultsStore(tmp_path / "results", fsync=False) as reopened:
        assert [r.name for r in await reopened.list_runs()] == ["analysis-1"]
