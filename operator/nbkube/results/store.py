"""The results repository: every executed notebook committed to a git repository on the operator's PVC.

Layout (a bare repository; `root` is the git directory, branch `main`)::

    <namespace>/<run>/<notebook>.ipynb    executed notebook, metadata["nbkube"] = run, uid, parameters...
    <namespace>/<run>/outputs/<name>      spilled full outputs (capped per run, see below)
    <namespace>/<run>/nbkube.json         the run record: uid, state, attempt, final, spills, committedAt
    _<anything>/...                       source notebooks (`add_notebook`); "_" never starts a namespace

Each commit_run is one commit on `main`; its message names the run and carries trailers
(`Nbkube-Run`, `Nbkube-Run-Uid`, `Nbkube-Path`, `Nbkube-Final`, `Nbkube-Attempt`), the author is
`nbkube (<namespace>/<run>) <<uid>@<namespace>.nbkube>`. A final commit also sets
`refs/nbkube/final/<uid>` (hidden from clones) so `find_final` is one ref read.

Why the git CLI (and not pygit2 or dulwich):
- Correctness: it is the reference implementation, so "stock git reads the repository" and
  `git fsck --strict` hold by construction; it writes objects to a temporary file and renames them, and
  moves refs with lock files, so a SIGKILL at any moment leaves a consistent repository (a commit either
  landed on `main` or is an unreferenced object). The only debris is a stale `*.lock`/`tmp_obj_*` file;
  `open()` removes those while holding an exclusive flock on `nbkube-writer.flock`, which proves no other
  writer is alive (the kernel releases a flock when its holder dies).
- Speed: no index and no work tree. A commit is built from trees directly (hash-object, mktree,
  hash-object -t commit, update-ref with the old value as a compare-and-swap), through long-lived
  `--batch`/`--stdin` processes, so it costs a few pipe round trips (no process spawns) and only rewrites
  the trees on the path to the run (O(runs in that namespace), never O(repository)).
  Parsed trees are cached (they are immutable). `git gc --auto` runs every `gc_every` commits.
- Async: everything is an asyncio subprocess; nothing blocks the operator's event loop (file writes and
  notebook validation go to a thread). pygit2 would need a writer thread and a binary wheel; dulwich
  is pure Python and slower per object. The git binary is needed anyway to serve `git clone`.

Concurrency: one process writes (the flock), and in it an asyncio lock serialises commits; callers
validate and serialise their notebooks in threads before queueing, so 50 runs finishing at once all land,
one commit each, in arrival order.

Idempotency: `commit_run(..., final=True)` first looks for the uid's final result (the ref, then, for a
crash between moving `main` and writing the ref, the run's `nbkube.json` at HEAD) and returns the existing
`CommitInfo` instead of committing twice. A checkpoint arriving after the final result is ignored.

Bounded size: spilled outputs of a run are capped at `max_spill_bytes_per_run` in total; a larger spill is
cut and ends with a `[nbkube: output truncated ...]` marker line, and `nbkube.json` records the original
size. Results outlive their NotebookRun; to reclaim space call `prune()`:

    await store.prune(older_than=timedelta(days=30), keep_last=20)   # per namespace, the newest 20 stay

It removes the selected run directories from `main`, squashes the history into one root commit (so the
removed blobs become unreachable), re-points the final refs of the runs that stay, and runs
`git gc --prune=now`. Commit ids recorded in the status of older runs stop resolving; paths at HEAD stay.
The store holds an exclusive flock for as long as it is open, so only the process that owns the store
can prune. By hand, with the operator stopped (scaled to 0) and the PVC mounted in a one-off pod running
the operator image: `python -m nbkube.results prune --root /results --older-than 30d --keep-last 20`
(`python -m nbkube.results list|fsck --root ...` inspect it).

Users get results back (see `nbkube.results.http`): `git clone http://<operator>:<port>/results`
(read-only git smart HTTP, e.g. through `kubectl port-forward`), or one file with
`GET /results/files/<path>?ref=<commit>` which is what `nbkube fetch` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import nbjson

from ._git import OID_HEX_LEN, GitError, GitPipe, TreeCache, TreeEntry, mktree_input, parse_tree, run_git
from .records import (
    OUTPUTS_DIR,
    RUN_JSON,
    CommitInfo,
    InvalidNotebookError,
    PruneResult,
    RunRecord,
    RunSummary,
    split_path,
)

BRANCH = "refs/heads/main"
FINAL_REFS = "refs/nbkube/final/"
FLOCK_NAME = "nbkube-writer.flock"
TMP_DIR = "nbkube-tmp"
ZERO_OID = "0" * OID_HEX_LEN
DEFAULT_MAX_SPILL_BYTES = 64 * 1024 * 1024
TREE_MODE = "040000"
BLOB_MODE = "100644"
_TRAILER_RE = re.compile(r"^(Nbkube-[A-Za-z-]+): (.*)$", re.MULTILINE)
_UNSAFE_IDENT = re.compile(r"[<>\n\r\x00]")

Nested = dict[str, "Nested | str"]  # a tree being built: name -> subtree or blob oid


class StoreLockedError(RuntimeError):
    """Another live process holds the results repository's writer lock."""


class StoreClosedError(RuntimeError):
    """The store is not open."""


@dataclass
class _Prepared:
    """A result serialised and written to temporary files, ready for the writer."""

    files: list[tuple[list[str], Path]]  # path below the run dir -> file whose bytes to store
    temp: list[Path]


class ResultsStore:
    """The operator's results repository. `await open()` before use, `await close()` after."""

    def __init__(
        self,
        root: Path,
        *,
        author_name: str = "nbkube",
        author_email: str = "nbkube@localhost",
        max_spill_bytes_per_run: int = DEFAULT_MAX_SPILL_BYTES,
        fsync: bool = True,
        gc_every: int = 200,
        lock_timeout: float = 60.0,
    ) -> None:
        self.root = Path(root).absolute()
        self.author_name = _clean(author_name)
        self.author_email = _clean(author_email)
        self.max_spill_bytes_per_run = max_spill_bytes_per_run
        self._fsync = fsync
        self._gc_every = gc_every
        self._lock_timeout = lock_timeout
        self._write_lock = asyncio.Lock()
        self._flock_fd: int | None = None
        self._head: str | None = None
        self._head_tree: str | None = None
        self._commits_since_gc = 0
        self._trees = TreeCache()
        self._cat_pipe = GitPipe(self.root, "cat-file", "--batch")
        self._check_pipe = GitPipe(self.root, "cat-file", "--batch-check")
        self._blob_pipe = GitPipe(self.root, "hash-object", "-w", "--no-filters", "--stdin-paths")
        self._commit_pipe = GitPipe(self.root, "hash-object", "-t", "commit", "-w", "--stdin-paths")
        self._tree_pipe = GitPipe(self.root, "mktree", "-z", "--missing", "--batch")
        self._ref_pipe = GitPipe(self.root, "update-ref", "--stdin")

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> ResultsStore:
        """Create the repository on first use; after a crash, remove what the dead writer left behind."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await self._acquire_flock()
        try:
            if not await asyncio.to_thread(_is_git_dir, self.root):
                await run_git(self.root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.root))
            await self._configure()
            await asyncio.to_thread(_remove_debris, self.root)
            await asyncio.to_thread((self.root / TMP_DIR).mkdir)
            await run_git(self.root, "symbolic-ref", "HEAD", BRANCH)
            self._head = await self._rev_parse(f"{BRANCH}^{{commit}}")
            self._head_tree = await self._rev_parse(f"{BRANCH}^{{tree}}") if self._head else None
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        for pipe in (
            self._cat_pipe,
            self._check_pipe,
            self._blob_pipe,
            self._commit_pipe,
            self._tree_pipe,
            self._ref_pipe,
        ):
            await pipe.close()
        fd, self._flock_fd = self._flock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    async def __aenter__(self) -> ResultsStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def git_dir(self) -> Path:
        return self.root

    @property
    def head(self) -> str | None:
        """The commit `main` points to (None before the first commit)."""
        return self._head

    async def _acquire_flock(self) -> None:
        fd = await asyncio.to_thread(os.open, self.root / FLOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self._lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    os.close(fd)
                    raise StoreLockedError(f"{self.root} is locked by another writer") from exc
                await asyncio.sleep(0.1)
        self._flock_fd = fd

    async def _configure(self) -> None:
        settings = {
            "core.logAllRefUpdates": "false",
            "gc.autoDetach": "false",
            "uploadpack.hideRefs": "refs/nbkube",
            "uploadpack.allowFilter": "true",
            "http.receivepack": "false",
            "receive.denyNonFastForwards": "true",
            "core.fsync": "committed,reference" if self._fsync else "",
        }
        _, current, _ = await run_git(self.root, "config", "--local", "--list", check=False)
        have = dict(line.split("=", 1) for line in current.decode().splitlines() if "=" in line)
        for key, value in settings.items():
            if have.get(key.lower()) != value:
                await run_git(self.root, "config", "--local", key, value)

    def _require_open(self) -> None:
        if self._flock_fd is None:
            raise StoreClosedError("the results store is not open")

    # ------------------------------------------------------------------ writing

    async def commit_run(
        self,
        record: RunRecord,
        notebook: nbformat.NotebookNode,
        spills: Mapping[str, bytes | Path] | None = None,
        *,
        final: bool,
    ) -> CommitInfo:
        """Commit a run's executed notebook (and spilled outputs) at `<namespace>/<run>/`.

        `final=False` is a checkpoint (partial result). Committing the final result of a uid that already
        has one returns the existing CommitInfo and commits nothing; so does a checkpoint after the final.
        Raises InvalidNotebookError before anything is written when the notebook is not valid nbformat.
        """
        self._require_open()
        now = time.time()
        prepared = await asyncio.to_thread(self._prepare_run, record, notebook, spills or {}, final, now)
        try:
            async with self._write_lock:
                self._require_open()
                existing = await self._existing_final(record)
                if existing is not None:
                    return existing
                run_tree = await self._write_tree(await self._blob_tree(prepared.files))
                root = await self._set_path(self._head_tree, [record.namespace, record.name], run_tree)
                if root == self._head_tree and self._head is not None:
                    return CommitInfo(self._head, record.notebook_path)
                author = f"{_clean(f'{self.author_name} ({record.run_dir})')} <{_run_email(record)}>"
                commit = await self._write_commit(root, self._head, _run_message(record, final), author, now)
                await self._advance(commit, root, final_uid=record.uid if final else None)
                return CommitInfo(commit, record.notebook_path)
        finally:
            await asyncio.to_thread(_unlink_all, prepared.temp)

    async def add_notebook(
        self, path: str, nb: nbformat.NotebookNode, message: str | None = None
    ) -> CommitInfo:
        """Commit a source notebook (what `notebook.repoPath` refers to) at `path`.

        `path` must start with a component beginning with "_" (e.g. "_notebooks/analysis.ipynb"): namespace
        names never do, so uploads can never collide with run results.
        """
        self._require_open()
        parts = split_path(path)
        if len(parts) < 2 or not parts[0].startswith("_") or not parts[-1].endswith(".ipynb"):
            raise ValueError(f"source notebooks live at _<dir>/.../<name>.ipynb, not {path!r}")
        now = time.time()
        tmp = self._tmp_path()
        await asyncio.to_thread(_write_file, tmp, _notebook_bytes(nb))
        try:
            async with self._write_lock:
                self._require_open()
                [blob] = await self._hash_files([tmp])
                root = await self._set_path(self._head_tree, parts, TreeEntry(BLOB_MODE, "blob", blob))
                if root == self._head_tree and self._head is not None:
                    return CommitInfo(self._head, path)
                subject = message.strip() if message and message.strip() else f"nbkube: add {path}"
                message = f"{subject}\n\nNbkube-Source: {path}\n"
                commit = await self._write_commit(root, self._head, message, self._committer, now)
                await self._advance(commit, root, final_uid=None)
                return CommitInfo(commit, path)
        finally:
            await asyncio.to_thread(_unlink_all, [tmp])

    def _tmp_path(self) -> Path:
        return self.root / TMP_DIR / uuid.uuid4().hex

    def _prepare_run(
        self,
        record: RunRecord,
        nb: nbformat.NotebookNode,
        spills: Mapping[str, bytes | Path],
        final: bool,
        now: float,
    ) -> _Prepared:
        """Runs in a thread: validate, serialise, cap spills, write temporary files."""
        copy = nbformat.NotebookNode(nb)
        copy["metadata"] = nbformat.NotebookNode(
            {**nb.get("metadata", {}), "nbkube": record.metadata(final=final)}
        )
        nb_bytes = _notebook_bytes(copy)
        files: list[tuple[list[str], Path]] = []
        temp: list[Path] = []

        def stage(parts: list[str], data: bytes) -> None:
            tmp = self._tmp_path()
            _write_file(tmp, data)
            temp.append(tmp)
            files.append((parts, tmp))

        try:
            stage([record.notebook], nb_bytes)
            budget = self.max_spill_bytes_per_run
            spill_info: dict[str, dict[str, Any]] = {}
            for name in sorted(spills):
                parts = [OUTPUTS_DIR, *split_path(name)]
                src = spills[name]
                size = len(src) if isinstance(src, bytes | bytearray) else Path(src).stat().st_size
                keep = min(size, max(budget, 0))
                budget -= keep
                spill_info[name] = {"bytes": size, "stored": keep, "truncated": keep < size}
                if keep < size:
                    head = (
                        bytes(src[:keep])
                        if isinstance(src, bytes | bytearray)
                        else _read_head(Path(src), keep)
                    )
                    marker = (
                        f"\n[nbkube: output truncated: {keep} of {size} bytes kept; "
                        f"the per-run spill limit is {self.max_spill_bytes_per_run} bytes]\n"
                    )
                    stage(parts, head + marker.encode())
                elif isinstance(src, bytes | bytearray):
                    stage(parts, bytes(src))
                elif "\n" in str(Path(src).absolute()):
                    stage(parts, Path(src).read_bytes())
                else:
                    files.append((parts, Path(src).absolute()))
            run_json = {
                **record.metadata(final=final),
                "name": record.name,
                "path": record.notebook_path,
                "spills": spill_info,
                "committedAt": datetime.fromtimestamp(now, UTC).isoformat(),
                "committedAtUnix": now,
            }
            stage([RUN_JSON], (json.dumps(run_json, indent=1, sort_keys=True, default=str) + "\n").encode())
        except BaseException:
            _unlink_all(temp)
            raise
        return _Prepared(files, temp)

    async def _blob_tree(self, files: list[tuple[list[str], Path]]) -> Nested:
        oids = await self._hash_files([p for _, p in files])
        tree: Nested = {}
        for (parts, _), oid in zip(files, oids, strict=True):
            node = tree
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ValueError(f"{'/'.join(parts)} clashes with a file of the same name")
                node = child
            if parts[-1] in node:
                raise ValueError(f"{'/'.join(parts)} is given twice")
            node[parts[-1]] = oid
        return tree

    async def _write_tree(self, tree: Nested) -> TreeEntry:
        entries: dict[str, TreeEntry] = {}
        for name, value in tree.items():
            if isinstance(value, dict):
                entries[name] = await self._write_tree(value)
            else:
                entries[name] = TreeEntry(BLOB_MODE, "blob", value)
        return TreeEntry(TREE_MODE, "tree", await self._mktree(entries))

    async def _set_path(self, tree: str | None, parts: list[str], entry: TreeEntry | None) -> str | None:
        """The tree `tree` with `entry` placed (or removed, for None) at `parts`; None when it ends empty."""
        entries = dict(await self._read_tree(tree)) if tree else {}
        name = parts[0]
        if len(parts) == 1:
            new = entry
        else:
            current = entries.get(name)
            sub = await self._set_path(
                current.oid if current and current.type == "tree" else None, parts[1:], entry
            )
            new = TreeEntry(TREE_MODE, "tree", sub) if sub else None
        if new is None:
            entries.pop(name, None)
        else:
            entries[name] = new
        if not entries:
            return None
        return await self._mktree(entries)

    async def _mktree(self, entries: dict[str, TreeEntry]) -> str:
        async with self._tree_pipe.lock:
            [oid] = await self._tree_pipe.lines(mktree_input(entries), 1)
        self._trees.put(oid, entries)
        return oid

    async def _hash_files(self, paths: list[Path]) -> list[str]:
        if not paths:
            return []
        async with self._blob_pipe.lock:
            return await self._blob_pipe.lines(b"".join(str(p).encode() + b"\n" for p in paths), len(paths))

    @property
    def _committer(self) -> str:
        return f"{self.author_name} <{self.author_email}>"

    async def _write_commit(
        self, tree: str | None, parent: str | None, message: str, author: str, now: float
    ) -> str:
        tree = tree or await self._mktree({})
        stamp = f"{int(now)} +0000"
        text = f"tree {tree}\n"
        if parent:
            text += f"parent {parent}\n"
        text += f"author {author} {stamp}\ncommitter {self._committer} {stamp}\n\n{message}"
        tmp = self._tmp_path()
        await asyncio.to_thread(_write_file, tmp, text.encode())
        try:
            async with self._commit_pipe.lock:
                [oid] = await self._commit_pipe.lines(str(tmp).encode() + b"\n", 1)
        finally:
            await asyncio.to_thread(_unlink_all, [tmp])
        return oid

    async def _advance(self, commit: str, tree: str | None, *, final_uid: str | None) -> None:
        """Move `main` to `commit` if it still is where we left it; then record the final ref.

        Two transactions in this order: the final ref must never name a commit that is not on `main`.
        A crash between them is repaired by `_existing_final` (it finds the result in HEAD's tree).
        """
        request = f"start\nupdate {BRANCH} {commit} {self._head or ZERO_OID}\nprepare\ncommit\n"
        expect = 3
        if final_uid:
            request += f"start\nupdate {FINAL_REFS}{final_uid} {commit}\nprepare\ncommit\n"
            expect += 3
        try:
            async with self._ref_pipe.lock:
                await self._ref_pipe.lines(request.encode(), expect)
        except GitError:
            self._head = await self._rev_parse(f"{BRANCH}^{{commit}}")
            self._head_tree = await self._rev_parse(f"{BRANCH}^{{tree}}") if self._head else None
            raise
        self._head, self._head_tree = commit, tree
        self._commits_since_gc += 1
        if self._gc_every and self._commits_since_gc >= self._gc_every:
            self._commits_since_gc = 0
            await run_git(self.root, "gc", "--auto", "--quiet")

    # ------------------------------------------------------------------ finding results

    async def find_final(self, uid: str) -> CommitInfo | None:
        """The commit holding the final result of run `uid`, or None."""
        self._require_open()
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$", uid):
            return None
        obj = await self._object(f"{FINAL_REFS}{uid}")
        if obj is None or obj[1] != "commit":
            return None
        trailers = _trailers(obj[2].decode(errors="replace"))
        if trailers.get("Nbkube-Run-Uid") == [uid] and "Nbkube-Path" in trailers:
            return CommitInfo(obj[0], trailers["Nbkube-Path"][0])
        for line in trailers.get("Nbkube-Final-Path", []):
            kept_uid, _, path = line.partition(" ")
            if kept_uid == uid:
                return CommitInfo(obj[0], path)
        return None

    async def _existing_final(self, record: RunRecord) -> CommitInfo | None:
        """Caller holds the write lock."""
        found = await self.find_final(record.uid)
        if found is not None:
            return found
        run = await self._run_json_at(self._head_tree, record.namespace, record.name)
        if not run or run.get("uid") != record.uid or run.get("final") is not True or not self._head:
            return None
        # The writer died after moving main and before writing the final ref: find that commit, repair.
        _, out, _ = await run_git(
            self.root, "rev-list", "-1", self._head, "--", f"{record.run_dir}/{RUN_JSON}"
        )
        commit = out.decode().strip()
        async with self._ref_pipe.lock:
            await self._ref_pipe.lines(
                f"start\nupdate {FINAL_REFS}{record.uid} {commit}\nprepare\ncommit\n".encode(), 3
            )
        return CommitInfo(commit, str(run.get("path", record.notebook_path)))

    async def read_file(self, path: str, ref: str = "HEAD") -> bytes:
        """The bytes of `path` at `ref` (a commit id, branch or tag). FileNotFoundError if absent."""
        self._require_open()
        split_path(path)
        _check_ref(ref)
        obj = await self._object(f"{ref}:{path}")
        if obj is None or obj[1] != "blob":
            raise FileNotFoundError(f"{path} at {ref}")
        return obj[2]

    async def stat_file(self, path: str, ref: str = "HEAD") -> tuple[str, int] | None:
        """(blob id, size) of `path` at `ref`, or None; cheap, reads no content."""
        self._require_open()
        split_path(path)
        _check_ref(ref)
        async with self._check_pipe.lock:
            [line] = await self._check_pipe.lines(f"{ref}:{path}\n".encode(), 1)
        parts = line.split()
        if len(parts) != 3 or parts[1] != "blob":
            return None
        return parts[0], int(parts[2])

    async def resolve(self, ref: str = "HEAD") -> str | None:
        """The commit id `ref` names, or None."""
        self._require_open()
        _check_ref(ref)
        async with self._check_pipe.lock:
            [line] = await self._check_pipe.lines(f"{ref}^{{commit}}\n".encode(), 1)
        parts = line.split()
        return parts[0] if len(parts) == 3 and parts[1] == "commit" else None

    async def load_notebook(self, repo_path: str, ref: str = "HEAD") -> nbformat.NotebookNode:
        """A notebook stored in the repository (for `notebook.repoPath`), parsed and validated."""
        data = await self.read_file(repo_path, ref)
        return await asyncio.to_thread(_parse_notebook, data, repo_path)

    async def list_runs(self, namespace: str | None = None, ref: str = "HEAD") -> list[RunSummary]:
        """The runs present at `ref`, sorted by namespace and name."""
        self._require_open()
        _check_ref(ref)
        root = await self._object(f"{ref}^{{tree}}")
        if root is None:
            return []
        return await self._list_runs(root[0], namespace)

    async def _list_runs(self, root: str, namespace: str | None) -> list[RunSummary]:
        out: list[RunSummary] = []
        for ns, ns_entry in sorted((await self._read_tree(root)).items()):
            if ns_entry.type != "tree" or ns.startswith(("_", ".")) or (namespace and ns != namespace):
                continue
            for name, run_entry in sorted((await self._read_tree(ns_entry.oid)).items()):
                if run_entry.type != "tree":
                    continue
                run_json = (await self._read_tree(run_entry.oid)).get(RUN_JSON)
                if run_json is None:
                    continue
                obj = await self._object(run_json.oid)
                if obj is None:
                    continue
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out.append(_summary(ns, name, json.loads(obj[2])))
        return out

    async def _run_json_at(self, tree: str | None, namespace: str, name: str) -> dict[str, Any] | None:
        if not tree:
            return None
        ns = (await self._read_tree(tree)).get(namespace)
        run = (await self._read_tree(ns.oid)).get(name) if ns and ns.type == "tree" else None
        entry = (await self._read_tree(run.oid)).get(RUN_JSON) if run and run.type == "tree" else None
        obj = await self._object(entry.oid) if entry else None
        if obj is None:
            return None
        try:
            data = json.loads(obj[2])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def _read_tree(self, oid: str) -> dict[str, TreeEntry]:
        cached = self._trees.get(oid)
        if cached is not None:
            return cached
        obj = await self._object(oid)
        if obj is None or obj[1] != "tree":
            raise GitError(f"tree {oid} is missing")
        entries = parse_tree(obj[2])
        self._trees.put(oid, entries)
        return entries

    async def _object(self, spec: str) -> tuple[str, str, bytes] | None:
        async with self._cat_pipe.lock:
            return await self._cat_pipe.object(spec)

    async def _rev_parse(self, spec: str) -> str | None:
        rc, out, _ = await run_git(self.root, "rev-parse", "--verify", "--quiet", spec, check=False)
        return out.decode().strip() if rc == 0 else None

    # ------------------------------------------------------------------ pruning

    async def prune(
        self,
        *,
        older_than: timedelta | None = None,
        keep_last: int | None = None,
        namespace: str | None = None,
        now: float | None = None,
    ) -> PruneResult:
        """Remove old runs and reclaim their space (see the module docstring). O(repository); run it rarely.

        A run goes when it is older than `older_than` (by its last commit) and, with `keep_last`, is not
        among the newest `keep_last` runs of its namespace. `keep_last` alone keeps only the newest N per
        namespace. Only namespace `namespace` is considered when given. History is squashed into one
        root commit so the removed results really leave the repository.
        """
        self._require_open()
        if older_than is None and keep_last is None:
            raise ValueError("prune needs older_than, keep_last or both")
        now = time.time() if now is None else now
        async with self._write_lock:
            if not self._head_tree or not self._head:
                return PruneResult([], None)
            runs = await self._list_runs(self._head_tree, namespace)
            doomed = _select_prunable(runs, older_than, keep_last, now)
            if not doomed:
                return PruneResult([], None)
            root: str | None = self._head_tree
            for run in doomed:
                root = await self._set_path(root, [run.namespace, run.name], None)
            kept = await self._list_runs(root, None) if root else []
            finals = {r.uid: r.path for r in kept if r.final}
            message = f"nbkube: prune {len(doomed)} runs, history squashed\n\n" + "".join(
                f"Nbkube-Final-Path: {uid} {path}\n" for uid, path in sorted(finals.items())
            )
            commit = await self._write_commit(root, None, message, self._committer, now)
            _, refs, _ = await run_git(self.root, "for-each-ref", "--format=%(refname)", FINAL_REFS)
            lines = ["start", f"update {BRANCH} {commit}"]
            for ref in refs.decode().split():
                uid = ref.removeprefix(FINAL_REFS)
                lines.append(f"update {ref} {commit}" if uid in finals else f"delete {ref}")
            lines += ["prepare", "commit", ""]
            await run_git(self.root, "update-ref", "--stdin", input="\n".join(lines).encode())
            self._head, self._head_tree = commit, root
            await run_git(self.root, "reflog", "expire", "--expire=now", "--all")
            await run_git(self.root, "gc", "--prune=now", "--quiet")
            for pipe in (self._cat_pipe, self._check_pipe):
                await pipe.close()  # drop their view of the packs gc just replaced
            return PruneResult([f"{r.namespace}/{r.name}" for r in doomed], commit)


def _select_prunable(
    runs: list[RunSummary], older_than: timedelta | None, keep_last: int | None, now: float
) -> list[RunSummary]:
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


def _summary(ns: str, name: str, data: dict[str, Any]) -> RunSummary:
    return RunSummary(
        namespace=ns,
        name=name,
        uid=str(data["uid"]),
        path=str(data.get("path", "")),
        state=str(data.get("state", "")),
        reason=data.get("reason"),
        attempt=int(data.get("attempt", 1)),
        final=bool(data.get("final")),
        environment=str(data.get("environment", "")),
        parameters=dict(data.get("parameters") or {}),
        committed_at=float(data.get("committedAtUnix", 0.0)),
        spills=dict(data.get("spills") or {}),
    )


def _run_message(record: RunRecord, final: bool) -> str:
    what = record.state if final else f"checkpoint{' ' + record.progress if record.progress else ''}"
    subject = f"nbkube: {record.run_dir} {what} (attempt {record.attempt})"
    body = f"Reason: {_one_line(record.reason)}\n\n" if record.reason else ""
    trailers = [
        ("Nbkube-Run", record.run_dir),
        ("Nbkube-Run-Uid", record.uid),
        ("Nbkube-Path", record.notebook_path),
        ("Nbkube-Environment", _one_line(record.environment)),
        ("Nbkube-Attempt", str(record.attempt)),
        ("Nbkube-State", _one_line(record.state)),
        ("Nbkube-Final", "true" if final else "false"),
    ]
    return f"{_one_line(subject)}\n\n{body}" + "".join(f"{k}: {v}\n" for k, v in trailers if v)


def _trailers(commit_text: str) -> dict[str, list[str]]:
    message = commit_text.split("\n\n", 1)[1] if "\n\n" in commit_text else ""
    out: dict[str, list[str]] = {}
    for key, value in _TRAILER_RE.findall(message):
        out.setdefault(key, []).append(value)
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _run_email(record: RunRecord) -> str:
    return _clean(f"{record.uid}@{record.namespace}.nbkube")


def _clean(text: str) -> str:
    """Safe inside a git author line: no angle brackets or line breaks."""
    return _UNSAFE_IDENT.sub("", text).strip()


def _check_ref(ref: str) -> None:
    if not ref or ref.startswith("-") or any(c in ref for c in "\n\r\x00 :"):
        raise ValueError(f"invalid ref: {ref!r}")


def _notebook_bytes(nb: nbformat.NotebookNode) -> bytes:
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise InvalidNotebookError(f"not a valid notebook: {exc.message}") from exc
    return (nbjson.writes(nb) + "\n").encode()


def _parse_notebook(data: bytes, where: str) -> nbformat.NotebookNode:
    try:
        nb = nbformat.reads(data.decode(), as_version=4)
        nbformat.validate(nb)
    except (ValueError, nbformat.ValidationError) as exc:
        raise InvalidNotebookError(f"{where} is not a valid notebook: {exc}") from exc
    return nb


def _is_git_dir(root: Path) -> bool:
    return (root / "HEAD").is_file() and (root / "objects").is_dir() and (root / "config").is_file()


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _read_head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def _unlink_all(paths: Iterable[Path]) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _remove_debris(root: Path) -> None:
    """Runs only while holding the writer flock, so every lock file here belongs to a dead process.

    Git writes objects to temporary files and renames them, and moves refs by renaming `<ref>.lock`,
    so a killed writer leaves at worst these files, never a torn object or ref.
    """
    remove: list[Path] = [root / n for n in ("HEAD.lock", "config.lock", "packed-refs.lock", "index.lock")]
    remove += [root / "shallow.lock", root / "gc.pid"]
    remove += list((root / "refs").rglob("*.lock"))
    objects = root / "objects"
    remove += list(objects.glob("??/tmp_obj_*")) + list(objects.glob("pack/tmp_*"))
    remove += list(objects.glob("pack/.tmp-*"))
    _unlink_all(remove)
    for debris in [*objects.glob("tmp_objdir-*"), *objects.glob("incoming-*"), root / TMP_DIR]:
        shutil.rmtree(debris, ignore_errors=True)
