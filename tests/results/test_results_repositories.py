"""One results repository per namespace: isolation, concurrency, names, resources, migration."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import executed_notebook, git, record
from nbkube.api.environment import NotebookEnvironmentSpec
from nbkube.api.run import NotebookRunSpec
from nbkube.config import Settings
from nbkube.results import CommitInfo, ResultsRepositories, ResultsStore, StoreLockedError
from nbkube.results.repositories import LEGACY_NAME, LEGACY_PARTIAL
from nbkube.run.driver import RunDriver
from nbkube.run.outcome import Reason
from nbkube.run.service import RunService
from nbkube_testenv.procs import git_children, open_fds


def _all_objects(git_dir: Path) -> set[str]:
    out = git(git_dir, "cat-file", "--batch-all-objects", "--batch-check")
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _blobs(git_dir: Path, ref: str = "main") -> set[str]:
    out = git(git_dir, "ls-tree", "-r", ref)
    return {line.split()[2] for line in out.splitlines() if line.split()[1] == "blob"}


@pytest.fixture
async def repositories(tmp_path: Path) -> Any:
    async with ResultsRepositories(tmp_path / "results", fsync=False) as r:
        yield r


async def test_a_clone_of_one_namespace_holds_no_object_of_another(
    repositories: ResultsRepositories, tmp_path: Path
) -> None:
    for i in range(3):
        await repositories.commit_run(record(i, namespace="team-a"), executed_notebook(), final=True)
        secret = executed_notebook()
        secret.cells[0].outputs[0].text = f"team-b secret {i}\n"
        await repositories.commit_run(
            record(10 + i, namespace="team-b"), secret, {"out.txt": f"b-only {i}".encode()}, final=True
        )
    b_repo = await repositories.repository("team-b")
    assert b_repo is not None
    b_blobs = _blobs(b_repo.git_dir)
    assert b_blobs

    clone = tmp_path / "clone-a"
    await asyncio.to_thread(
        subprocess.run,
        ["git", "clone", "-q", str(repositories.root / "team-a.git"), str(clone)],
        check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull},
    )
    cloned = _all_objects(clone / ".git")
    assert cloned and not cloned & b_blobs
    assert not _all_objects(repositories.root / "team-a.git") & b_blobs  # nor the repository itself
    assert git(clone / ".git", "ls-tree", "--name-only", "HEAD").split() == ["team-a"]


async def test_fifty_concurrent_runs_across_five_namespaces_all_land_fsck_clean(
    repositories: ResultsRepositories,
) -> None:
    records = [record(i, namespace=f"ns-{i % 5}") for i in range(50)]
    infos = await asyncio.gather(
        *(repositories.commit_run(r, executed_notebook(), final=True) for r in records)
    )
    assert repositories.namespaces() == [f"ns-{k}" for k in range(5)]
    for r, info in zip(records, infos, strict=True):
        assert info.path == f"{r.namespace}/{r.name}/analysis.ipynb"
        assert await repositories.find_final(r.namespace, r.uid) == info
    for k in range(5):
        git_dir = repositories.root / f"ns-{k}.git"
        assert git(git_dir, "rev-list", "--count", "main").strip() == "10"
        assert git(git_dir, "ls-tree", "--name-only", "main").split() == [f"ns-{k}"]
        git(git_dir, "fsck", "--strict", "--no-dangling")
        assert len(await repositories.list_runs(f"ns-{k}")) == 10


@pytest.mark.parametrize(
    "name", ["../x", "A", "a" * 64, "", "a.b", "-a", "a/b", "x.git", "..", "legacy-single-repository"]
)
async def test_a_name_that_is_not_a_namespace_gets_none_and_creates_nothing(
    repositories: ResultsRepositories, name: str
) -> None:
    await repositories.commit_run(record(1, namespace="team-a"), executed_notebook(), final=True)
    before = sorted(p.name for p in repositories.root.iterdir())
    assert await repositories.repository(name) is None
    assert await repositories.find_final(name, "0000-uid-1") is None
    assert await repositories.list_runs(name) == []
    with pytest.raises(FileNotFoundError):
        await repositories.read_file(name, "team-a/analysis-1/analysis.ipynb")
    assert sorted(p.name for p in repositories.root.iterdir()) == before
    assert not (repositories.root.parent / "x").exists()


async def test_a_valid_namespace_without_results_has_no_repository_and_gets_none_created(
    repositories: ResultsRepositories,
) -> None:
    assert await repositories.repository("team-z") is None
    assert await repositories.list_runs("team-z") == []
    with pytest.raises(FileNotFoundError):
        await repositories.read_file("team-z", "team-z/a/a.ipynb")
    assert not (repositories.root / "team-z.git").exists()
    assert repositories.namespaces() == []


async def test_commit_of_a_record_whose_namespace_is_not_a_dns_label_is_refused(
    repositories: ResultsRepositories,
) -> None:
    with pytest.raises(ValueError):
        await repositories.commit_run(record(1, namespace="Team"), executed_notebook(), final=True)
    assert sorted(p.name for p in repositories.root.iterdir()) == ["nbkube-writer.flock"]


async def test_a_namespace_store_refuses_another_namespaces_run(repositories: ResultsRepositories) -> None:
    await repositories.commit_run(record(1, namespace="team-a"), executed_notebook(), final=True)
    store = await repositories.repository("team-a")
    assert store is not None
    with pytest.raises(ValueError):
        await store.commit_run(record(2, namespace="team-b"), executed_notebook(), final=True)
    with pytest.raises(ValueError):
        await store.add_notebook("_notebooks/x.ipynb", executed_notebook())
    info = await store.add_notebook("team-a/_notebooks/x.ipynb", executed_notebook())
    assert await repositories.read_file("team-a", info.path)
    assert [r.name for r in await repositories.list_runs("team-a")] == ["analysis-1"]


async def test_read_file_reads_only_the_given_namespaces_repository(
    repositories: ResultsRepositories,
) -> None:
    b = await repositories.commit_run(record(1, namespace="team-b"), executed_notebook(), final=True)
    await repositories.commit_run(record(2, namespace="team-a"), executed_notebook(), final=True)
    assert await repositories.read_file("team-b", b.path, b.commit)
    with pytest.raises(FileNotFoundError):
        await repositories.read_file("team-a", b.path)
    with pytest.raises(FileNotFoundError):
        await repositories.read_file("team-a", b.path, b.commit)


async def test_a_second_writer_of_the_root_is_refused(repositories: ResultsRepositories) -> None:
    with pytest.raises(StoreLockedError):
        await ResultsRepositories(repositories.root, lock_timeout=0.2).open()


async def test_git_processes_of_200_namespaces_are_bounded_and_stop_when_idle(tmp_path: Path) -> None:
    fds_before = open_fds()
    peak = {"git": 0, "fds": 0}
    async with ResultsRepositories(
        tmp_path / "results", fsync=False, pipe_idle_seconds=1.0, max_active=8
    ) as repositories:

        async def sample() -> None:
            while True:
                peak["git"] = max(peak["git"], await asyncio.to_thread(git_children))
                peak["fds"] = max(peak["fds"], open_fds())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        nb = executed_notebook(1)
        await asyncio.gather(
            *(repositories.commit_run(record(i, namespace=f"ns-{i}"), nb, final=True) for i in range(200))
        )
        sampler.cancel()
        assert len(repositories.namespaces()) == 200
        await asyncio.sleep(0.3)  # the stores beyond the 8 most recent stop theirs in the background
        assert repositories.running_processes() <= 8 * 6
        await asyncio.sleep(2.5)
        idle_git, idle_fds = await asyncio.to_thread(git_children), open_fds()
        assert repositories.running_processes() == 0
        logging.getLogger(__name__).warning(
            "200 namespaces: git processes peak %d, idle %d; fds before %d, peak %d, idle %d",
            peak["git"],
            idle_git,
            fds_before,
            peak["fds"],
            idle_fds,
        )
        assert idle_git == 0
        assert idle_fds <= fds_before + 2  # the root's flock (and nothing per namespace)
        # 8 stores at work at once, each up to 6 pipes with 3 fds, plus one-shot commands
        assert peak["git"] <= 8 * 6 + 8 * 2 + 8 * 6
        # a store whose processes stopped works again
        assert await repositories.find_final("ns-7", "0000-uid-7") is not None
    assert open_fds() <= fds_before


# ---------------------------------------------------------------------- the driver's read path


def _driver(results: ResultsRepositories, namespace: str, tmp_path: Path) -> RunDriver:
    service = RunService(None, Settings(data_dir=tmp_path / "data"), None, results)  # type: ignore[arg-type]
    body = {"metadata": {"name": "reader", "namespace": namespace, "uid": "reader-uid"}}
    return RunDriver(service.context(), body, None)  # type: ignore[arg-type]


def _spec(repo_path: str) -> NotebookRunSpec:
    return NotebookRunSpec.model_validate(
        {"environmentRef": {"name": "py"}, "notebook": {"repoPath": repo_path}}
    )


async def test_repo_path_into_another_namespace_is_not_found_like_a_missing_one(
    repositories: ResultsRepositories, tmp_path: Path
) -> None:
    secret = await repositories.commit_run(record(1, namespace="team-b"), executed_notebook(), final=True)
    own = await repositories.commit_run(record(2, namespace="team-a"), executed_notebook(), final=True)
    driver = _driver(repositories, "team-a", tmp_path)
    env = NotebookEnvironmentSpec.model_validate({"image": "x"})

    loaded = await driver._load_notebook(_spec(own.path), env)
    assert isinstance(loaded, nbformat.NotebookNode)

    assert await driver._read_repo(secret.path) is None
    refused = await driver._load_notebook(_spec(secret.path), env)
    missing = await driver._load_notebook(_spec("team-b/no-such-run/analysis.ipynb"), env)
    assert not isinstance(refused, nbformat.NotebookNode) and not isinstance(missing, nbformat.NotebookNode)
    assert refused.reason == missing.reason == Reason.NOTEBOOK_NOT_FOUND
    assert refused.message.replace(secret.path, "P") == missing.message.replace(
        "team-b/no-such-run/analysis.ipynb", "P"
    )
    # an escape inside the own namespace's prefix is refused as well
    assert await driver._read_repo("team-a/../team-b/analysis-1/analysis.ipynb") is None


# ---------------------------------------------------------------------- migration


async def _legacy(root: Path) -> dict[str, CommitInfo]:
    """A single repository as earlier versions wrote it: two namespaces, a checkpoint-only run, a run
    name reused by a later uid, and a source notebook at the top."""
    out: dict[str, CommitInfo] = {}
    async with ResultsStore(root, fsync=False) as store:
        for i in range(3):
            out[f"a{i}"] = await store.commit_run(
                record(i, namespace="team-a"), executed_notebook(), final=True
            )
            out[f"b{i}"] = await store.commit_run(
                record(i + 10, namespace="team-b"), executed_notebook(), {"o.txt": b"b"}, final=True
            )
        out["cp"] = await store.commit_run(
            record(20, namespace="team-a", state="Running"), executed_notebook(), final=False
        )
        # analysis-0 of team-a again, by a new uid: the first uid's final is not at HEAD any more
        again = record(0, namespace="team-a")
        again = type(again)(**{**again.__dict__, "uid": "0000-uid-0-again"})
        out["a0-again"] = await store.commit_run(again, executed_notebook(2), final=True)
        await store.add_notebook("_notebooks/shared.ipynb", executed_notebook())
    return out


async def test_a_single_repository_is_migrated_into_one_repository_per_namespace(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "results"
    legacy = await _legacy(root)
    legacy_head = git(root, "rev-parse", "main").strip()
    legacy_a_tree = git(root, "rev-parse", "main:team-a").strip()
    b_blobs = _blobs(root, "main:team-b")

    with caplog.at_level(logging.INFO, logger="nbkube.results.repositories"):
        async with ResultsRepositories(root, fsync=False) as repositories:
            assert repositories.namespaces() == ["team-a", "team-b"]
            a = await repositories.repository("team-a")
            assert a is not None and a.head is not None
            # one commit per namespace, holding exactly that namespace's directory as it was at HEAD
            assert git(a.git_dir, "rev-list", "--count", "main").strip() == "1"
            assert git(a.git_dir, "rev-parse", "main:team-a").strip() == legacy_a_tree
            assert git(a.git_dir, "ls-tree", "--name-only", "main").split() == ["team-a"]
            assert not _all_objects(a.git_dir) & b_blobs
            git(a.git_dir, "fsck", "--strict", "--no-dangling")
            git(root / "team-b.git", "fsck", "--strict", "--no-dangling")

            # finals at HEAD point at the import commit, paths unchanged
            for key, uid, ns in [("a1", "0000-uid-1", "team-a"), ("b2", "0000-uid-12", "team-b")]:
                found = await repositories.find_final(ns, uid)
                assert found is not None and found.path == legacy[key].path
                assert await repositories.read_file(ns, found.path, found.commit)
            again = await repositories.find_final("team-a", "0000-uid-0-again")
            assert again is not None and again.path == legacy["a0-again"].path
            assert await repositories.find_final("team-a", "0000-uid-0") is None  # its final left HEAD
            assert await repositories.find_final("team-a", "0000-uid-20") is None  # checkpoint only
            runs = {r.name: r for r in await repositories.list_runs("team-a")}
            assert set(runs) == {"analysis-0", "analysis-1", "analysis-2", "analysis-20"}
            assert runs["analysis-20"].final is False

            # committing again is idempotent against the imported final
            redo = await repositories.commit_run(
                record(1, namespace="team-a"), executed_notebook(), final=True
            )
            assert redo.commit == a.head

            # new results keep landing
            new = await repositories.commit_run(
                record(5, namespace="team-b"), executed_notebook(), final=True
            )
            assert git(root / "team-b.git", "rev-list", "--count", "main").strip() == "2"
            assert new.path == "team-b/analysis-5/analysis.ipynb"

    # the old repository is moved aside whole, never deleted
    moved = root / LEGACY_NAME
    assert git(moved, "rev-parse", "main").strip() == legacy_head
    git(moved, "fsck", "--strict", "--no-dangling")
    assert git(moved, "cat-file", "-t", legacy["a0"].commit).strip() == "commit"
    assert git(moved, "show", "main:_notebooks/shared.ipynb")
    assert not (root / "HEAD").exists() and not (root / "objects").exists()
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["nbkube-writer.flock", "team-a.git", "team-b.git", LEGACY_NAME]
    )
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "imported namespace team-a" in messages and "imported namespace team-b" in messages
    assert LEGACY_NAME in messages and "_notebooks" in messages

    # opening again migrates nothing
    async with ResultsRepositories(root, fsync=False) as repositories:
        assert repositories.namespaces() == ["team-a", "team-b"]
    assert git(root / "team-a.git", "rev-list", "--count", "main").strip() == "1"


async def test_a_migration_interrupted_after_one_namespace_finishes_without_importing_twice(
    tmp_path: Path,
) -> None:
    root = tmp_path / "results"
    await _legacy(root)
    # a first attempt got as far as importing team-a, then died
    done = tmp_path / "done"
    shutil.copytree(root, done)
    async with ResultsRepositories(done, fsync=False):
        pass
    shutil.copytree(done / "team-a.git", root / "team-a.git")
    first = git(root / "team-a.git", "rev-parse", "main").strip()

    async with ResultsRepositories(root, fsync=False) as repositories:
        assert repositories.namespaces() == ["team-a", "team-b"]
    assert git(root / "team-a.git", "rev-list", "main").split() == [first]
    assert git(root / "team-b.git", "rev-list", "--count", "main").strip() == "1"
    git(root / LEGACY_NAME, "fsck", "--strict", "--no-dangling")


async def test_an_interrupted_move_aside_is_completed_on_open(tmp_path: Path) -> None:
    root = tmp_path / "results"
    await _legacy(root)
    legacy_head = git(root, "rev-parse", "main").strip()
    async with ResultsRepositories(root, fsync=False):
        pass
    # as if killed while moving: some of the old repository's files still at the root
    (root / LEGACY_NAME).rename(root / LEGACY_PARTIAL)
    for name in ("objects", "refs", "HEAD"):
        (root / LEGACY_PARTIAL / name).rename(root / name)

    async with ResultsRepositories(root, fsync=False) as repositories:
        assert repositories.namespaces() == ["team-a", "team-b"]
    assert git(root / LEGACY_NAME, "rev-parse", "main").strip() == legacy_head
    git(root / LEGACY_NAME, "fsck", "--strict", "--no-dangling")
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["nbkube-writer.flock", "team-a.git", "team-b.git", LEGACY_NAME]
    )
