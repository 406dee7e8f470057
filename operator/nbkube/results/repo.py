"""The git repository under a results store: opening and locking it, its long-lived git processes,
reading objects, writing staged ones and moving refs. The writer, reader and pruner share one of these.

Crash safety: git writes objects to a temporary file and renames them, and moves refs with lock files, so
a SIGKILL at any moment leaves a consistent repository (a commit either landed on its branch or is an
unreferenced object). The only debris is a stale `*.lock`/`tmp_obj_*` file; `open()` removes those
while an exclusive flock proves no other writer is alive (the kernel releases a flock when its holder
dies): its own `nbkube-writer.flock`, or, with `writer_lock=False`, the one its caller holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import commits
from ._files import BoundedDict, acquire_flock, discard, is_git_dir, remove_debris, syncfs, write_files
from ._git import OID_HEX_LEN, GitError, GitPipe, TreeCache, TreeEntry, parse_tree, run_git
from .layout import BRANCH, BRANCH_NAME, FINAL_REFS, FLOCK_NAME, HIDDEN_REFS, RUN_JSON, TMP_DIR, final_ref
from .records import CommitInfo
from .staging import TREE_MODE, Staged

ZERO_OID = "0" * OID_HEX_LEN


@dataclass
class Tip:
    """A branch as this process last read or moved it: its ref, commit and tree (None before the first
    commit). Only this process moves it (the flock), so it is the truth between two reads."""

    ref: str
    commit: str | None = None
    tree: str | None = None


class Repository:
    """One bare git repository at `root`, as the store's parts use it. `main` is the tip of BRANCH."""

    def __init__(
        self,
        root: Path,
        *,
        committer: str,
        fsync: bool,
        gc_every: int,
        lock_timeout: float,
        writer_lock: bool,
        pipe_idle_seconds: float | None,
    ) -> None:
        self.root = root
        self.committer = committer
        self.fsync = fsync
        self.main = Tip(BRANCH)
        self.finals: dict[str, str] = {}  # uid -> commit, mirrors refs/nbkube/final/*
        self.write_lock = asyncio.Lock()  # whoever moves a ref or rewrites history holds it
        self.trees = TreeCache()
        self.run_json_cache = BoundedDict(4096)  # nbkube.json blob -> its facts
        self._gc_every = gc_every
        self._commits_since_gc = 0
        self._lock_timeout = lock_timeout
        self._use_flock = writer_lock
        self._flock_fd: int | None = None
        idle = pipe_idle_seconds
        self.cat_pipe = GitPipe(root, "cat-file", "--batch", idle_seconds=idle)
        self.check_pipe = GitPipe(root, "cat-file", "--batch-check", idle_seconds=idle)
        self.blob_pipe = GitPipe(
            root, "hash-object", "-w", "--no-filters", "--stdin-paths", idle_seconds=idle
        )
        self.commit_pipe = GitPipe(
            root, "hash-object", "-t", "commit", "-w", "--stdin-paths", idle_seconds=idle
        )
        self.tree_pipe = GitPipe(root, "hash-object", "-t", "tree", "-w", "--stdin-paths", idle_seconds=idle)
        self.ref_pipe = GitPipe(root, "update-ref", "--stdin", idle_seconds=idle)
        self.pipes = (
            self.cat_pipe,
            self.check_pipe,
            self.blob_pipe,
            self.commit_pipe,
            self.tree_pipe,
            self.ref_pipe,
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Create the repository on first use; after a crash, remove what the dead writer left behind.
        On failure nothing stays held (processes, lock)."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        if self._use_flock:
            self._flock_fd = await acquire_flock(self.root / FLOCK_NAME, self._lock_timeout)
        try:
            if not await asyncio.to_thread(is_git_dir, self.root):
                await run_git(
                    self.root, "init", "--quiet", "--bare", f"--initial-branch={BRANCH_NAME}", str(self.root)
                )
            await self._configure()
            await asyncio.to_thread(remove_debris, self.root)
            await asyncio.to_thread((self.root / TMP_DIR).mkdir)
            await run_git(self.root, "symbolic-ref", "HEAD", BRANCH)
            await self.reload(self.main)
            await self._load_finals()
        except BaseException:
            await self.release_processes()
            self.release_lock()
            raise

    async def release_processes(self) -> None:
        """Stop the long-lived git processes now (each after its current exchange); they restart on use."""
        for pipe in self.pipes:
            async with pipe.lock:
                await pipe.close()

    def running_processes(self) -> int:
        return sum(pipe.running for pipe in self.pipes)

    def release_lock(self) -> None:
        fd, self._flock_fd = self._flock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    async def _configure(self) -> None:
        settings = {
            "core.logAllRefUpdates": "false",
            "gc.autoDetach": "false",
            "uploadpack.hideRefs": HIDDEN_REFS,
            "uploadpack.allowFilter": "true",
            "http.receivepack": "false",
            "receive.denyNonFastForwards": "true",
            # packs (gc) and refs are fsynced by git; loose objects by one syncfs per batch, see write_objects
            "core.fsync": "reference" if self.fsync else "",
        }
        _, current, _ = await run_git(self.root, "config", "--local", "--list", check=False)
        have = dict(line.split("=", 1) for line in current.decode().splitlines() if "=" in line)
        for key, value in settings.items():
            if have.get(key.lower()) != value:
                await run_git(self.root, "config", "--local", key, value)

    async def _load_finals(self) -> None:
        _, out, _ = await run_git(self.root, "for-each-ref", "--format=%(refname) %(objectname)", FINAL_REFS)
        self.finals = {
            ref.removeprefix(FINAL_REFS): oid
            for ref, oid in (line.split() for line in out.decode().splitlines())
        }

    def tmp_path(self) -> Path:
        return self.root / TMP_DIR / uuid.uuid4().hex

    # ------------------------------------------------------------------ reading objects

    async def object(self, spec: str) -> tuple[str, str, bytes] | None:
        async with self.cat_pipe.lock:
            return await self.cat_pipe.object(spec)

    async def read_tree(self, oid: str, staged: Staged | None = None) -> dict[str, TreeEntry]:
        """A tree's entries: staged in this batch, cached (trees are immutable) or read."""
        if staged is not None and oid in staged.trees:
            return staged.trees[oid]
        cached = self.trees.get(oid)
        if cached is not None:
            return cached
        obj = await self.object(oid)
        if obj is None or obj[1] != "tree":
            raise GitError(f"tree {oid} is missing")
        entries = parse_tree(obj[2])
        self.trees.put(oid, entries)
        return entries

    async def read_trees(self, oids: list[str]) -> list[dict[str, TreeEntry]]:
        """Many trees in one pipelined exchange; those read are not cached (a listing would flush the
        writer's trees from the cache)."""
        found: dict[str, dict[str, TreeEntry]] = {}
        for oid in oids:
            cached = self.trees.get(oid)
            if cached is not None:
                found[oid] = cached
        missing = [oid for oid in dict.fromkeys(oids) if oid not in found]
        if missing:
            async with self.cat_pipe.lock:
                objs = await self.cat_pipe.objects(missing)
            for oid, obj in zip(missing, objs, strict=True):
                if obj is None or obj[1] != "tree":
                    raise GitError(f"tree {oid} is missing")
                found[oid] = parse_tree(obj[2])
        return [found[oid] for oid in oids]

    async def rev_parse(self, spec: str) -> str | None:
        rc, out, _ = await run_git(self.root, "rev-parse", "--verify", "--quiet", spec, check=False)
        return out.decode().strip() if rc == 0 else None

    async def run_json_at(
        self, tree: str | None, namespace: str, directory: str, staged: Staged | None = None
    ) -> dict[str, Any] | None:
        """The `nbkube.json` of run directory `<namespace>/<directory>` in `tree`, or None."""
        if not tree:
            return None
        ns = (await self.read_tree(tree, staged)).get(namespace)
        run = (await self.read_tree(ns.oid, staged)).get(directory) if ns and ns.type == "tree" else None
        entry = (await self.read_tree(run.oid, staged)).get(RUN_JSON) if run and run.type == "tree" else None
        if entry is None:
            return None
        known = self.run_json_cache.get(entry.oid)
        if known is not None:
            return dict(known)
        obj = await self.object(entry.oid)
        if obj is None:
            return None
        try:
            data = json.loads(obj[2])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def final_info(self, uid: str, commit: str) -> CommitInfo | None:
        """Where run `uid`'s final result is in `commit`, as its message says."""
        obj = await self.object(commit)
        if obj is None or obj[1] != "commit":
            return None
        return commits.final_info(obj[0], obj[2].decode(errors="replace"), uid)

    # ------------------------------------------------------------------ writing objects and refs

    async def set_path(
        self, tree: str | None, parts: list[str], entry: TreeEntry | None, staged: Staged
    ) -> str | None:
        """Stage `tree` with `entry` placed (or removed, for None) at `parts`; None when it ends empty.
        Only the trees on the path are rewritten: O(entries along it), never O(repository)."""
        entries = dict(await self.read_tree(tree, staged)) if tree else {}
        name = parts[0]
        if len(parts) == 1:
            new = entry
        else:
            current = entries.get(name)
            sub = await self.set_path(
                current.oid if current and current.type == "tree" else None, parts[1:], entry, staged
            )
            new = TreeEntry(TREE_MODE, "tree", sub) if sub else None
        if new is None:
            entries.pop(name, None)
        else:
            entries[name] = new
        if not entries:
            return None
        return staged.tree(entries)

    async def write_objects(self, staged: Staged) -> None:
        """Have git write every staged object (three pipes at once); each id must be the one we computed.

        Trees and commits go through `hash-object -t tree|commit --stdin-paths` (which checks their format)
        rather than `mktree`, because mktree looks up every entry's object: O(runs in the namespace).
        """
        tree_oids = list(staged.trees)
        tree_files = [self.tmp_path() for _ in tree_oids]
        commit_files = [self.tmp_path() for _ in staged.commits]
        writes = [(p, staged.tree_data[o]) for p, o in zip(tree_files, tree_oids, strict=True)]
        writes += [(p, data) for p, (_, data) in zip(commit_files, staged.commits, strict=True)]

        async def hash_files(pipe: GitPipe, paths: list[Path], expected: list[str]) -> None:
            _expect(expected, await pipe_lines(pipe, [str(p).encode() for p in paths]))

        try:
            await asyncio.to_thread(write_files, writes)
            blob_oids = list(staged.blobs)
            results = await asyncio.gather(
                hash_files(self.blob_pipe, [staged.blobs[o] for o in blob_oids], blob_oids),
                hash_files(self.tree_pipe, tree_files, tree_oids),
                hash_files(self.commit_pipe, commit_files, [oid for oid, _ in staged.commits]),
                return_exceptions=True,
            )
        finally:
            discard([p for p, _ in writes])
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self.fsync:  # the objects must be on disk before a ref names them
            await asyncio.to_thread(syncfs, self.root)
        for oid, entries in staged.trees.items():
            self.trees.put(oid, entries)

    async def advance(self, tip: Tip, commit: str, tree: str | None, finals: Mapping[str, str]) -> None:
        """Move `tip`'s ref to `commit` if it still is where we left it; then record the final refs.

        Two transactions in this order: a final ref must never name a commit that is not on a branch.
        A crash between them is repaired by the writer (it finds the result in the branch's tree).
        """
        request = f"start\nupdate {tip.ref} {commit} {tip.commit or ZERO_OID}\nprepare\ncommit\n"
        expect = 3
        if finals:
            updates = "".join(f"update {final_ref(uid)} {c}\n" for uid, c in finals.items())
            request += f"start\n{updates}prepare\ncommit\n"
            expect += 3
        try:
            async with self.ref_pipe.lock:
                await self.ref_pipe.lines(request.encode(), expect)
        except GitError:
            await self.reload(tip)
            if tip.commit == commit:  # the branch moved, the final refs did not: the results are on it
                self.finals.update(finals)
            raise
        self.finals.update(finals)
        tip.commit, tip.tree = commit, tree
        self._commits_since_gc += 1
        if self._gc_every and self._commits_since_gc >= self._gc_every:
            self._commits_since_gc = 0
            await run_git(self.root, "gc", "--auto", "--quiet")

    async def set_final_ref(self, uid: str, commit: str) -> None:
        """Point run `uid`'s final ref at `commit` (a repair: the commit is on a branch already)."""
        async with self.ref_pipe.lock:
            await self.ref_pipe.lines(
                f"start\nupdate {final_ref(uid)} {commit}\nprepare\ncommit\n".encode(), 3
            )
        self.finals[uid] = commit

    async def reload(self, tip: Tip) -> None:
        """Read where `tip`'s ref is now."""
        tip.commit = await self.rev_parse(f"{tip.ref}^{{commit}}")
        tip.tree = await self.rev_parse(f"{tip.ref}^{{tree}}") if tip.commit else None


async def pipe_lines(pipe: GitPipe, lines: list[bytes]) -> list[str]:
    """One exchange of `lines` with a line-per-line git process, under its lock."""
    if not lines:
        return []
    async with pipe.lock:
        return await pipe.lines(b"".join(line + b"\n" for line in lines), len(lines))


def _expect(expected: list[str], got: list[str]) -> None:
    if expected != got:
        raise GitError(f"git computed other object ids than we did: {got} != {expected}")
