"""Rewriting a results repository's history: pruning old runs, and importing a namespace as a first commit.

Pruning removes the selected run directories from `main`, squashes the history into one root commit (so
the removed blobs become unreachable), re-points the final refs of the runs that stay (the new commit
lists them in `Nbkube-Final-Path` trailers), and runs `git gc --prune=now`. Commit ids recorded in the
status of older runs stop resolving; paths at HEAD stay. O(repository): run it rarely.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from . import commits
from ._files import syncfs
from ._git import OID_HEX_LEN, GitError, TreeEntry, git_argv, git_env, run_git
from .layout import final_ref
from .reader import ResultsReader
from .records import CommitInfo, PruneResult, RunSummary
from .repo import Repository
from .staging import TREE_MODE, Staged


class Pruner:
    """The history-rewriting part of a ResultsStore; both steps hold the repository's write lock."""

    def __init__(self, repo: Repository, reader: ResultsReader) -> None:
        self._repo = repo
        self._reader = reader

    async def prune(
        self,
        *,
        older_than: timedelta | None = None,
        keep_last: int | None = None,
        namespace: str | None = None,
        now: float | None = None,
    ) -> PruneResult:
        """Remove old runs and reclaim their space; see `ResultsStore.prune`."""
        if older_than is None and keep_last is None:
            raise ValueError("prune needs older_than, keep_last or both")
        now = time.time() if now is None else now
        repo, main = self._repo, self._repo.main
        async with repo.write_lock:
            if not main.tree or not main.commit:
                return PruneResult([], None)
            runs = await self._reader.runs_in(main.tree, namespace)
            doomed = select_prunable(runs, older_than, keep_last, now)
            if not doomed:
                return PruneResult([], None)
            staged = Staged()
            root: str | None = main.tree
            for run in doomed:
                root = await repo.set_path(root, [run.namespace, run.directory or run.name], None, staged)
            if root is not None:
                await repo.write_objects(staged)  # the trees must exist before runs_in reads them back
                staged = Staged()
            kept = await self._reader.runs_in(root, None) if root else []
            finals = {r.uid: r.path for r in kept if r.final}
            message = f"nbkube: prune {len(doomed)} runs, history squashed\n\n" + commits.final_path_trailers(
                finals
            )
            commit = staged.commit(
                root, None, message, author=repo.committer, committer=repo.committer, now=now
            )
            await repo.write_objects(staged)
            lines = ["start", f"update {main.ref} {commit}"]
            for uid in repo.finals:
                lines.append(
                    f"update {final_ref(uid)} {commit}" if uid in finals else f"delete {final_ref(uid)}"
                )
            lines += ["prepare", "commit", ""]
            await run_git(repo.root, "update-ref", "--stdin", input="\n".join(lines).encode())
            main.commit, main.tree = commit, root
            repo.finals = dict.fromkeys(finals, commit)
            await run_git(repo.root, "reflog", "expire", "--expire=now", "--all")
            await run_git(repo.root, "gc", "--prune=now", "--quiet")
            for pipe in (repo.cat_pipe, repo.check_pipe):
                await pipe.close()  # drop their view of the packs gc just replaced
            return PruneResult([f"{r.namespace}/{r.name}" for r in doomed], commit)

    async def import_namespace(
        self,
        namespace: str,
        source: Path,
        tree: str,
        *,
        finals: Mapping[str, str],
        message: str,
        now: float | None = None,
    ) -> CommitInfo:
        """Make `tree` (a namespace directory in the repository `source`) this empty repository's first
        commit, at `<namespace>/`; see `ResultsStore.import_namespace`."""
        if len(tree) != OID_HEX_LEN or any(c not in "0123456789abcdef" for c in tree):
            raise ValueError(f"not a tree id: {tree!r}")
        repo = self._repo
        async with repo.write_lock:
            if repo.main.commit is not None:
                raise ValueError(f"{repo.root} already has commits; import only into an empty repository")
            _, listing, _ = await run_git(source, "rev-list", "--objects", tree)
            await copy_objects(source, repo.root, listing)
            if repo.fsync:
                await asyncio.to_thread(syncfs, repo.root)
            staged = Staged()
            root = staged.tree({namespace: TreeEntry(TREE_MODE, "tree", tree)})
            body = commits.final_path_trailers(finals)
            text = f"{message.strip()}\n\n{body}" if body else f"{message.strip()}\n"
            stamp = time.time() if now is None else now
            commit = staged.commit(
                root, None, text, author=repo.committer, committer=repo.committer, now=stamp
            )
            await repo.write_objects(staged)
            await repo.advance(repo.main, commit, root, dict.fromkeys(finals, commit))
            return CommitInfo(commit, namespace)


def select_prunable(
    runs: list[RunSummary], older_than: timedelta | None, keep_last: int | None, now: float
) -> list[RunSummary]:
    """The runs a prune removes: per namespace, those not among the newest `keep_last` (by their last
    commit) and, with `older_than`, last committed longer ago than that."""
    by_ns: dict[str, list[RunSummary]] = {}
    for run in runs:
        by_ns.setdefault(run.namespace, []).append(run)
    doomed: list[RunSummary] = []
    for ns_runs in by_ns.values():
        ns_runs.sort(key=lambda r: r.committed_at, reverse=True)
        protected = ns_runs[: keep_last or 0] if keep_last is not None else []
        for run in ns_runs:
            if run in protected:
                continue
            if older_than is None or now - run.committed_at > older_than.total_seconds():
                doomed.append(run)
    return doomed


async def copy_objects(source: Path, dest: Path, listing: bytes) -> None:
    """Stream the objects `listing` (rev-list --objects output) names from `source` into `dest` as a pack."""
    read_fd, write_fd = os.pipe()
    try:
        packer = await asyncio.create_subprocess_exec(
            *git_argv(source, "pack-objects", "--stdout", "-q"),
            stdin=asyncio.subprocess.PIPE,
            stdout=write_fd,
            stderr=asyncio.subprocess.PIPE,
            env=git_env(),
        )
        indexer = await asyncio.create_subprocess_exec(
            *git_argv(dest, "index-pack", "--stdin"),
            stdin=read_fd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=git_env(),
        )
    finally:
        os.close(read_fd)
        os.close(write_fd)
    (_, pack_err), (_, index_err) = await asyncio.gather(packer.communicate(listing), indexer.communicate())
    if packer.returncode != 0 or indexer.returncode != 0:
        detail = (pack_err + index_err).decode(errors="replace").strip()[-2000:]
        raise GitError(f"copying objects from {source} to {dest} failed: {detail}")
