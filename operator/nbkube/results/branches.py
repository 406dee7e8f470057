"""Branches beside main: a session's history (`refs/heads/sessions/...`), one commit per change.

Each branch has one writer (its session's driver, one operation at a time), so a commit is made
directly, not batched: the files staged, the commit built on the branch's head, git writing the
objects, the ref moved with a compare-and-swap on the head it was built on (under the repository's
write lock, shared with main's writer). A branch starts at any commit of the repository (a fork) or
at main's head.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ._files import discard, write_file
from ._git import GitError, TreeEntry, file_blob_id, object_id, run_git
from .layout import check_ref, split_path
from .repo import ZERO_OID, Repository, Tip
from .staging import BLOB_MODE, Staged

BRANCH_REFS = "refs/heads/"
_FIELD, _RECORD = "\x1f", "\x1e"


class StaleBranch(Exception):
    """The branch is no longer at the commit the change was made on."""


@dataclass(frozen=True)
class BranchCommit:
    commit: str
    time: str  # ISO 8601, the committer's
    message: str


def branch_ref(branch: str) -> str:
    ref = branch if branch.startswith(BRANCH_REFS) else BRANCH_REFS + branch
    check_ref(ref)
    for part in ref.split("/"):
        if not part or part.startswith(".") or part.endswith(".lock") or ".." in part:
            raise ValueError(f"invalid branch name: {branch!r}")
    return ref


class BranchWriter:
    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        # Where each branch was left by this process (it alone moves them, under the flock): a commit
        # on a known head needs no `rev-parse`; a branch moved by anyone else fails the ref's
        # compare-and-swap and is read again.
        self._tips: dict[str, Tip] = {}

    async def start(self, branch: str, base: str | None) -> str | None:
        """Creates `branch` at `base` (a commit; None: main's head), unless it exists; its head (None
        for a branch of an empty repository, until its first commit)."""
        repo, ref = self._repo, branch_ref(branch)
        async with repo.write_lock:
            existing = await repo.rev_parse(f"{ref}^{{commit}}")
            if existing is not None:
                return existing
            start = await repo.rev_parse(f"{base}^{{commit}}") if base else repo.main.commit
            if base and start is None:
                raise ValueError(f"no commit {base!r} in the repository")
            if start is None:  # an empty repository: main gets a first, empty commit, so clones check it out
                start = await self._first_commit()
            if start is not None:
                await run_git(repo.root, "update-ref", ref, start, ZERO_OID)
            return start

    async def _first_commit(self) -> str:
        """An empty root commit on main (under the write lock, main having none)."""
        repo, staged = self._repo, Staged()
        empty = staged.tree({})
        message = "nbkube: repository created\n"
        commit = staged.commit(
            empty, None, message, author=repo.committer, committer=repo.committer, now=time.time()
        )
        await repo.write_objects(staged)
        await repo.advance(repo.main, commit, empty, {})
        return commit

    async def commit(
        self,
        branch: str,
        files: Mapping[str, bytes | Path],
        message: str,
        *,
        parent: str | None,
        author: str,
    ) -> str:
        """Commits `files` (repository paths; bytes or a file to read) on `branch`, whose head must be
        `parent` (StaleBranch otherwise); the new head."""
        repo, ref = self._repo, branch_ref(branch)
        paths = {tuple(split_path(path)): data for path, data in files.items()}
        temp: list[Path] = []
        try:
            staged_files = await asyncio.to_thread(self._stage_files, paths, temp)
            async with repo.write_lock:
                tip = self._tips.get(ref)
                if tip is None or tip.commit != parent:
                    tip = self._tips[ref] = Tip(ref)
                    await repo.reload(tip)
                if tip.commit != parent:
                    raise StaleBranch(f"{branch} is at {tip.commit or 'nothing'}, not at {parent}")
                staged = Staged()
                tree = tip.tree  # None: the first commit of a branch started in an empty repository
                for parts, (oid, source) in staged_files.items():
                    staged.blobs[oid] = source
                    tree = await repo.set_path(tree, list(parts), TreeEntry(BLOB_MODE, "blob", oid), staged)
                commit = staged.commit(
                    tree, parent, message, author=author, committer=repo.committer, now=time.time()
                )
                await repo.write_objects(staged)
                try:
                    await repo.advance(tip, commit, tree, {})
                except GitError:
                    self._tips.pop(ref, None)  # read again next time (advance read where it is now)
                    if tip.commit != parent:
                        raise StaleBranch(f"{branch} moved to {tip.commit or 'nothing'}") from None
                    raise
                return commit
        finally:
            discard(temp)

    def _stage_files(
        self, paths: Mapping[tuple[str, ...], bytes | Path], temp: list[Path]
    ) -> dict[tuple[str, ...], tuple[str, Path]]:
        """In a thread: each file's blob id and the file git reads it from."""
        staged: dict[tuple[str, ...], tuple[str, Path]] = {}
        for parts, data in paths.items():
            if isinstance(data, Path):
                staged[parts] = (file_blob_id(data), data)
                continue
            tmp = self._repo.tmp_path()
            write_file(tmp, data)
            temp.append(tmp)
            staged[parts] = (object_id("blob", data), tmp)
        return staged

    async def log(self, branch: str, *, limit: int, trailer: str | None = None) -> list[BranchCommit]:
        """The branch's commits, newest first; with `trailer`, only those whose message has it."""
        ref = branch_ref(branch)
        if trailer is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", trailer):
            raise ValueError(f"invalid trailer name: {trailer!r}")
        grep = [f"--grep=^{trailer}: "] if trailer else []
        rc, out, _ = await run_git(
            self._repo.root,
            "log",
            f"--max-count={limit}",
            *grep,
            f"--format=%H{_FIELD}%cI{_FIELD}%B{_RECORD}",
            ref,
            "--",
            check=False,
        )
        if rc != 0:
            raise FileNotFoundError(f"no branch {branch}")
        entries = []
        for record in out.decode(errors="replace").split(_RECORD):
            record = record.strip("\n")
            if not record:
                continue
            commit, when, message = record.split(_FIELD, 2)
            entries.append(BranchCommit(commit, when, message.strip()))
        return entries
