"""One results repository: executed notebooks committed to a bare git repository on the operator's PVC.

The operator keeps one such repository per namespace (`nbkube.results.repositories.ResultsRepositories`,
`<root>/<namespace>.git`, created with `namespace=` so it holds only that namespace's directory); this
class is one repository. Layout (bare; `root` is the git directory, branch `main`)::

    <namespace>/<run>/<notebook>.ipynb    executed notebook, metadata["nbkube"] = run, uid, parameters...
    <namespace>/<run>/outputs/<name>      spilled full outputs (capped per run, see below)
    <namespace>/<run>/nbkube.json         the run record: uid, state, attempt, final, spills, committedAt
    <namespace>/_<dir>/...                source notebooks of a namespace's store (`add_notebook`)
    _<anything>/...                       source notebooks of a store without a namespace

`<run>` is the run's name and `<notebook>` its notebook's file name, each mapped to a safe name
(`nbkube.names.safe_component`: "_" and a hash of the name) when git or a checkout would refuse it or
break on it (`*.lock`, a leading ".", `.git`, `git~1`, more than 255 bytes); `nbkube.json` keeps the name.

Each commit_run is one commit on `main`; its message names the run and carries trailers
(`Nbkube-Run`, `Nbkube-Run-Uid`, `Nbkube-Path`, `Nbkube-Final`, `Nbkube-Attempt`), the author is
`nbkube (<namespace>/<run>) <<uid>@<namespace>.nbkube>`. A final commit also sets
`refs/nbkube/final/<uid>` (hidden from clones) so `find_final` is one ref read.

Why the git CLI (and not pygit2 or dulwich):
- Correctness: it is the reference implementation, so "stock git reads the repository" and
  `git fsck --strict` hold by construction; it writes objects to a temporary file and renames them, and
  moves refs with lock files, so a SIGKILL at any moment leaves a consistent repository (a commit either
  landed on `main` or is an unreferenced object). The only debris is a stale `*.lock`/`tmp_obj_*` file;
  `open()` removes those while an exclusive flock proves no other writer is alive (the kernel releases a
  flock when its holder dies): its own `nbkube-writer.flock`, or, with `writer_lock=False`, the one its
  caller holds (ResultsRepositories holds `<root>/nbkube-writer.flock` for every repository below root).
- Speed: no index and no work tree. Commits are built from trees directly: we compute each object's id
  (SHA-1 of its canonical bytes), have git write blobs, trees and commits through three long-lived
  `hash-object -t <type> -w --stdin-paths` processes at once (git re-hashes, validates the format, and we
  compare ids), then move `main` with `update-ref --stdin` using the old value as a compare-and-swap.
  Only the trees on the path to the run are rewritten: O(runs in that namespace), never O(repository).
  `mktree` is avoided on purpose: it looks up every entry's object, O(namespace) disk reads per commit.
  Parsed trees are cached (they are immutable). `git gc --auto` runs every `gc_every` commits.
- Durability (`fsync=True`, the default): refs and packs are fsynced by git (`core.fsync=reference` on
  top of git's defaults); loose objects by one `syncfs()` per batch before the ref moves, rather than one
  fsync per object. (`core.fsyncMethod=batch` would do the same inside git, but it hides objects until a
  process exits, which does not fit long-lived processes.)
- Async: everything is an asyncio subprocess; nothing blocks the operator's event loop (file writes,
  hashing and notebook validation go to threads). pygit2 would need a writer thread and a binary wheel;
  dulwich is pure Python and slower per object. The git binary is needed anyway to serve `git clone`.
  Requires git >= 2.28 (update-ref --stdin transactions, init --initial-branch).

Processes: the long-lived git processes start on a store's first request; with `pipe_idle_seconds` they
stop after that long without one, so a store that is open but unused runs none.

Concurrency: one process writes (the flock), and in it one writer task takes whatever is queued (up to
`max_batch`) and commits it as a chain, one commit per run, moving `main` once per batch. Callers
validate, serialise and hash their notebooks in threads before queueing, so 50 runs finishing at once all
land, each with its own commit, in arrival order, at the cost of a few batches. A caller that is
cancelled while waiting still gets its result committed.

Idempotency: `commit_run(..., final=True)` first looks for the uid's final result (`refs/nbkube/final/`,
mirrored in memory; then, for a crash between moving `main` and writing that ref, the run's `nbkube.json`
at HEAD) and returns the existing `CommitInfo` instead of committing twice. A checkpoint arriving after
the final result is ignored.

Bounded size: spilled outputs of a run are capped at `max_spill_bytes_per_run` in total; a larger spill is
cut and ends with a `[nbkube: output truncated ...]` marker line, and `nbkube.json` records the original
size. Results outlive their NotebookRun; to reclaim space call `prune()`:

    await store.prune(older_than=timedelta(days=30), keep_last=20)   # per namespace, the newest 20 stay

It removes the selected run directories from `main`, squashes the history into one root commit (so the
removed blobs become unreachable), re-points the final refs of the runs that stay, and runs
`git gc --prune=now`. Commit ids recorded in the status of older runs stop resolving; paths at HEAD stay.
The writer flock is held for as long as the store is open, so only the process that owns the store
can prune. By hand, with the operator stopped (scaled to 0) and the PVC mounted in a one-off pod running
the operator image: `python -m nbkube.results prune --root /results --older-than 30d --keep-last 20`
prunes every namespace's repository in turn (`python -m nbkube.results list|fsck --root ...` inspect them).

Users get results back over the operator's HTTP port (see `nbkube.results.http`), one file with
`GET /results/files/<path>?ref=<commit>`, which is what `nbkube fetch` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import nbjson

from ._git import (
    OID_HEX_LEN,
    GitError,
    GitPipe,
    TreeCache,
    TreeEntry,
    file_blob_id,
    git_argv,
    git_env,
    object_id,
    parse_tree,
    run_git,
    tree_bytes,
)
from .records import (
    OUTPUTS_DIR,
    RUN_JSON,
    CommitInfo,
    InvalidNotebookError,
    PruneResult,
    ReadLimitExceeded,
    RunRecord,
    RunSummary,
    check_component,
    split_path,
)

log = logging.getLogger(__name__)

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
class _File:
    parts: list[str]  # where it goes: below the run directory for runs, from the root for source notebooks
    source: Path  # the file git reads the bytes from
    oid: str  # the blob id we computed; git must agree


@dataclass
class _Request:
    """One commit to make, serialised and hashed (in a thread) before it is queued for the writer."""

    record: RunRecord | None  # None for a source notebook
    final: bool
    files: list[_File]
    message: str
    author: str
    now: float
    path: str
    temp: list[Path]
    run_json: tuple[str, dict[str, Any]] | None = None  # blob id of nbkube.json and what matters in it
    future: asyncio.Future[CommitInfo] | None = None


@dataclass
class _Staged:
    """Objects of one batch, with the ids we computed, until git has written them all."""

    blobs: dict[str, Path] = field(default_factory=dict)
    trees: dict[str, dict[str, TreeEntry]] = field(default_factory=dict)
    tree_data: dict[str, bytes] = field(default_factory=dict)
    commits: list[tuple[str, bytes]] = field(default_factory=list)


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
        max_batch: int = 64,
        lock_timeout: float = 60.0,
        namespace: str | None = None,
        writer_lock: bool = True,
        pipe_idle_seconds: float | None = None,
    ) -> None:
        """`namespace`: the repository holds only that namespace's results (`commit_run` refuses other
        namespaces, `add_notebook` takes `<namespace>/_<dir>/...` paths). `writer_lock=False`: the
        caller holds a lock that covers this repository (ResultsRepositories holds one for its whole
        root), so no flock is taken here. `pipe_idle_seconds`: stop the long-lived git processes after
        that long without use (they start again on the next request)."""
        self.root = Path(root).absolute()
        self.namespace = namespace
        self._use_flock = writer_lock
        self._is_open = False
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
        self._max_batch = max_batch
        self._trees = TreeCache()
        self._finals: dict[str, str] = {}  # uid -> commit, mirrors refs/nbkube/final/*
        self._json_meta = BoundedDict(4096)  # nbkube.json blob -> its facts  # nbkube.json blob -> facts
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        idle = pipe_idle_seconds
        self._cat_pipe = GitPipe(self.root, "cat-file", "--batch", idle_seconds=idle)
        self._check_pipe = GitPipe(self.root, "cat-file", "--batch-check", idle_seconds=idle)
        self._blob_pipe = GitPipe(
            self.root, "hash-object", "-w", "--no-filters", "--stdin-paths", idle_seconds=idle
        )
        self._commit_pipe = GitPipe(
            self.root, "hash-object", "-t", "commit", "-w", "--stdin-paths", idle_seconds=idle
        )
        self._tree_pipe = GitPipe(
            self.root, "hash-object", "-t", "tree", "-w", "--stdin-paths", idle_seconds=idle
        )
        self._ref_pipe = GitPipe(self.root, "update-ref", "--stdin", idle_seconds=idle)
        self._pipes = (
            self._cat_pipe,
            self._check_pipe,
            self._blob_pipe,
            self._commit_pipe,
            self._tree_pipe,
            self._ref_pipe,
        )

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> ResultsStore:
        """Create the repository on first use; after a crash, remove what the dead writer left behind."""
        if self.namespace is not None:
            check_component(self.namespace, "namespace")
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        if self._use_flock:
            await self._acquire_flock()
        self._is_open = True
        try:
            if not await asyncio.to_thread(_is_git_dir, self.root):
                await run_git(self.root, "init", "--quiet", "--bare", "--initial-branch=main", str(self.root))
            await self._configure()
            await asyncio.to_thread(_remove_debris, self.root)
            await asyncio.to_thread((self.root / TMP_DIR).mkdir)
            await run_git(self.root, "symbolic-ref", "HEAD", BRANCH)
            await self._reload_head()
            await self._load_finals()
        except BaseException:
            await self.close()
            raise
        self._writer_task = asyncio.create_task(self._writer(), name=f"nbkube-results-writer:{self.root}")
        return self

    async def _load_finals(self) -> None:
        _, out, _ = await run_git(self.root, "for-each-ref", "--format=%(refname) %(objectname)", FINAL_REFS)
        self._finals = {
            ref.removeprefix(FINAL_REFS): oid
            for ref, oid in (line.split() for line in out.decode().splitlines())
        }

    async def close(self) -> None:
        """Finish the queued commits, then stop the writer and the git processes, and release the lock.

        From its first step on, the store takes no new request (StoreClosedError), so nothing is queued
        behind the writer's back; a request that still finds itself queued when the writer stops fails
        with StoreClosedError rather than waiting forever."""
        self._is_open = False
        if self._writer_task is not None:
            if not self._writer_task.done():
                await self._queue.join()  # every queued commit lands before we stop
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
            self._writer_task = None
        while not self._queue.empty():
            left = self._queue.get_nowait()
            self._queue.task_done()
            if left.future is not None and not left.future.done():
                left.future.set_exception(StoreClosedError("the results store closed before this commit"))
        await self.release_processes()
        fd, self._flock_fd = self._flock_fd, None
        if fd is not None:
            os.close(fd)  # releases the flock

    async def __aenter__(self) -> ResultsStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def release_processes(self) -> None:
        """Stop the long-lived git processes now (each after its current exchange); they restart on use."""
        for pipe in self._pipes:
            async with pipe.lock:
                await pipe.close()

    def running_processes(self) -> int:
        """How many of this store's long-lived git processes are running."""
        return sum(pipe.running for pipe in self._pipes)

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
            # packs (gc) and refs are fsynced by git; loose objects by one syncfs per batch, see _flush
            "core.fsync": "reference" if self._fsync else "",
        }
        _, current, _ = await run_git(self.root, "config", "--local", "--list", check=False)
        have = dict(line.split("=", 1) for line in current.decode().splitlines() if "=" in line)
        for key, value in settings.items():
            if have.get(key.lower()) != value:
                await run_git(self.root, "config", "--local", key, value)

    def _require_open(self) -> None:
        if not self._is_open:
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
        if self.namespace is not None and record.namespace != self.namespace:
            raise ValueError(f"{record.run_dir} does not belong in the repository of {self.namespace}")
        request = await asyncio.to_thread(
            self._prepare_run, record, notebook, spills or {}, final, time.time()
        )
        return await self._submit(request)

    async def add_notebook(
        self, path: str, nb: nbformat.NotebookNode, message: str | None = None
    ) -> CommitInfo:
        """Commit a source notebook (what `notebook.repoPath` refers to) at `path`.

        `path` must start with a component beginning with "_" (e.g. "_notebooks/analysis.ipynb"): namespace
        names never do, so uploads can never collide with run results. An unchanged notebook makes no commit.
        """
        self._require_open()
        parts = split_path(path)
        if self.namespace is not None:
            if len(parts) < 3 or parts[0] != self.namespace or not parts[1].startswith("_"):
                raise ValueError(f"source notebooks live at {self.namespace}/_<dir>/.../<name>.ipynb")
        elif len(parts) < 2 or not parts[0].startswith("_"):
            raise ValueError(f"source notebooks live at _<dir>/.../<name>.ipynb, not {path!r}")
        if not parts[-1].endswith(".ipynb"):
            raise ValueError(f"source notebooks are .ipynb files, not {path!r}")
        subject = message.strip().splitlines()[0] if message and message.strip() else f"nbkube: add {path}"

        def prepare() -> _Request:
            data = _notebook_bytes(nb)
            tmp = self._tmp_path()
            _write_file(tmp, data)
            return _Request(
                record=None,
                final=False,
                files=[_File(parts, tmp, object_id("blob", data))],
                message=f"{subject}\n\nNbkube-Source: {path}\n",
                author=self._committer,
                now=time.time(),
                path=path,
                temp=[tmp],
            )

        return await self._submit(await asyncio.to_thread(prepare))

    async def _submit(self, request: _Request) -> CommitInfo:
        """Queue a prepared request for the writer and wait until it landed (or failed)."""
        try:
            self._require_open()
            if request.run_json is not None:
                self._json_meta[request.run_json[0]] = request.run_json[1]
            request.future = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(request)
            # shield: a cancelled caller must not stop the commit it asked for, only stop waiting for it
            return await asyncio.shield(request.future)
        finally:
            if request.future is None or request.future.done():
                _discard(request.temp)
            else:
                request.future.add_done_callback(lambda _: _discard(request.temp))

    def _tmp_path(self) -> Path:
        return self.root / TMP_DIR / uuid.uuid4().hex

    def _prepare_run(
        self,
        record: RunRecord,
        nb: nbformat.NotebookNode,
        spills: Mapping[str, bytes | Path],
        final: bool,
        now: float,
    ) -> _Request:
        """Runs in a thread: validate, serialise, cap spills, hash, write temporary files."""
        copy = nbformat.NotebookNode(nb)
        copy["metadata"] = nbformat.NotebookNode(
            {**nb.get("metadata", {}), "nbkube": record.metadata(final=final)}
        )
        nb_bytes = _notebook_bytes(copy)
        files: list[_File] = []
        temp: list[Path] = []

        def stage(parts: list[str], data: bytes) -> str:
            tmp = self._tmp_path()
            _write_file(tmp, data)
            temp.append(tmp)
            oid = object_id("blob", data)
            files.append(_File(parts, tmp, oid))
            return oid

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
                elif isinstance(src, bytes | bytearray) or "\n" in str(Path(src).absolute()):
                    stage(parts, bytes(src) if isinstance(src, bytes | bytearray) else Path(src).read_bytes())
                else:
                    path = Path(src).absolute()
                    files.append(_File(parts, path, file_blob_id(path)))
            run_json = {
                **record.metadata(final=final),
                "name": record.name,
                "path": record.notebook_path,
                "spills": spill_info,
                "committedAt": datetime.fromtimestamp(now, UTC).isoformat(),
                "committedAtUnix": now,
            }
            json_bytes = (json.dumps(run_json, indent=1, sort_keys=True, default=str) + "\n").encode()
            json_oid = stage([RUN_JSON], json_bytes)
            _check_unique([f.parts for f in files])
        except BaseException:
            _unlink_all(temp)
            raise
        author = f"{_clean(f'{self.author_name} ({record.run_dir})')} <{_run_email(record)}>"
        return _Request(
            record=record,
            final=final,
            files=files,
            message=_run_message(record, final),
            author=author,
            now=now,
            path=record.notebook_path,
            temp=temp,
            run_json=(json_oid, {"uid": record.uid, "final": final, "path": record.notebook_path}),
        )

    # ------------------------------------------------------------------ the writer

    async def _writer(self) -> None:
        """The single writer: takes every queued request, commits them as a chain, moves `main` once."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self._max_batch:
                batch.append(self._queue.get_nowait())
            try:
                async with self._write_lock:
                    try:
                        await self._commit_batch(batch)
                    except Exception:
                        if len(batch) == 1:
                            raise
                        log.warning("results batch of %d failed; committing them one by one", len(batch))
                        for (
                            req
                        ) in batch:  # one bad request (e.g. a spill file changed) must not sink the rest
                            if req.future is not None and not req.future.done():
                                try:
                                    await self._commit_batch([req])
                                except Exception as exc:
                                    req.future.set_exception(exc)
            except Exception as exc:  # never let the writer die: fail the batch, keep serving
                for req in batch:
                    if req.future is not None and not req.future.done():
                        req.future.set_exception(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_batch(self, batch: list[_Request]) -> None:
        staged = _Staged()
        head, tree = self._head, self._head_tree
        new_finals: dict[str, CommitInfo] = {}
        done: list[tuple[_Request, CommitInfo]] = []
        for req in batch:
            try:
                existing = await self._existing_final(req, tree, new_finals, staged) if req.record else None
                if existing is not None:
                    done.append((req, existing))
                    continue
                new_tree = tree
                if req.record is not None:  # a run's directory is replaced as a whole
                    run_dir = TreeEntry(TREE_MODE, "tree", self._stage_files(staged, req.files))
                    parts = [req.record.namespace, req.record.directory]
                    new_tree = await self._set_path(new_tree, parts, run_dir, staged)
                for f in req.files if req.record is None else []:
                    entry = TreeEntry(BLOB_MODE, "blob", f.oid)
                    new_tree = await self._set_path(new_tree, f.parts, entry, staged)
                    staged.blobs[f.oid] = f.source
                if new_tree == tree and head is not None:
                    done.append((req, CommitInfo(head, req.path)))
                    continue
                commit = self._stage_commit(staged, new_tree, head, req.message, req.author, req.now)
                head, tree = commit, new_tree
                info = CommitInfo(commit, req.path)
                if req.record is not None and req.final:
                    new_finals[req.record.uid] = info
                done.append((req, info))
            except Exception as exc:  # this request is bad (e.g. a path clash); the others go on
                if req.future is not None and not req.future.done():
                    req.future.set_exception(exc)
        if head != self._head:
            assert head is not None  # (it moved: to a commit)
            await self._flush(staged)
            await self._advance(head, tree, {uid: info.commit for uid, info in new_finals.items()})
        for req, info in done:
            if req.future is not None and not req.future.done():
                req.future.set_result(info)

    def _stage_tree(self, staged: _Staged, entries: dict[str, TreeEntry]) -> str:
        data = tree_bytes(entries)
        oid = object_id("tree", data)
        staged.trees[oid] = entries
        staged.tree_data[oid] = data
        return oid

    def _stage_files(self, staged: _Staged, files: list[_File]) -> str:
        """Stage a fresh tree holding exactly `files` (a run's directory); its id."""
        nested: dict[str, Any] = {}
        for f in files:
            node = nested
            for part in f.parts[:-1]:
                node = node.setdefault(part, {})
            node[f.parts[-1]] = f
            staged.blobs[f.oid] = f.source

        def stage(node: dict[str, Any]) -> str:
            entries = {
                name: TreeEntry(TREE_MODE, "tree", stage(value))
                if isinstance(value, dict)
                else TreeEntry(BLOB_MODE, "blob", value.oid)
                for name, value in node.items()
            }
            return self._stage_tree(staged, entries)

        return stage(nested)

    def _stage_commit(
        self, staged: _Staged, tree: str | None, parent: str | None, message: str, author: str, now: float
    ) -> str:
        tree = tree or self._stage_tree(staged, {})
        stamp = f"{int(now)} +0000"
        text = f"tree {tree}\n" + (f"parent {parent}\n" if parent else "")
        text += f"author {author} {stamp}\ncommitter {self._committer} {stamp}\n\n{message}"
        data = text.encode()
        oid = object_id("commit", data)
        staged.commits.append((oid, data))
        return oid

    async def _set_path(
        self, tree: str | None, parts: list[str], entry: TreeEntry | None, staged: _Staged
    ) -> str | None:
        """Stage `tree` with `entry` placed (or removed, for None) at `parts`; None when it ends empty."""
        entries = dict(await self._read_tree(tree, staged)) if tree else {}
        name = parts[0]
        if len(parts) == 1:
            new = entry
        else:
            current = entries.get(name)
            sub = await self._set_path(
                current.oid if current and current.type == "tree" else None, parts[1:], entry, staged
            )
            new = TreeEntry(TREE_MODE, "tree", sub) if sub else None
        if new is None:
            entries.pop(name, None)
        else:
            entries[name] = new
        if not entries:
            return None
        return self._stage_tree(staged, entries)

    async def _flush(self, staged: _Staged) -> None:
        """Have git write every staged object (three pipes at once); each id must be the one we computed.

        Trees and commits go through `hash-object -t tree|commit --stdin-paths` (which checks their format)
        rather than `mktree`, because mktree looks up every entry's object: O(runs in the namespace).
        """
        tree_oids = list(staged.trees)
        tree_files = [self._tmp_path() for _ in tree_oids]
        commit_files = [self._tmp_path() for _ in staged.commits]
        writes = [(p, staged.tree_data[o]) for p, o in zip(tree_files, tree_oids, strict=True)]
        writes += [(p, data) for p, (_, data) in zip(commit_files, staged.commits, strict=True)]

        async def hash_files(pipe: GitPipe, paths: list[Path], expected: list[str]) -> None:
            _expect(expected, await self._pipe_lines(pipe, [str(p).encode() for p in paths]))

        try:
            await asyncio.to_thread(_write_files, writes)
            blob_oids = list(staged.blobs)
            results = await asyncio.gather(
                hash_files(self._blob_pipe, [staged.blobs[o] for o in blob_oids], blob_oids),
                hash_files(self._tree_pipe, tree_files, tree_oids),
                hash_files(self._commit_pipe, commit_files, [oid for oid, _ in staged.commits]),
                return_exceptions=True,
            )
        finally:
            _discard([p for p, _ in writes])
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if self._fsync:  # the objects must be on disk before a ref names them
            await asyncio.to_thread(_syncfs, self.root)
        for oid, entries in staged.trees.items():
            self._trees.put(oid, entries)

    async def _pipe_lines(self, pipe: GitPipe, lines: list[bytes]) -> list[str]:
        if not lines:
            return []
        async with pipe.lock:
            return await pipe.lines(b"".join(line + b"\n" for line in lines), len(lines))

    @property
    def _committer(self) -> str:
        return f"{self.author_name} <{self.author_email}>"

    async def _advance(self, commit: str, tree: str | None, finals: Mapping[str, str]) -> None:
        """Move `main` to `commit` if it still is where we left it; then record the final refs.

        Two transactions in this order: a final ref must never name a commit that is not on `main`.
        A crash between them is repaired by `_existing_final` (it finds the result in HEAD's tree).
        """
        request = f"start\nupdate {BRANCH} {commit} {self._head or ZERO_OID}\nprepare\ncommit\n"
        expect = 3
        if finals:
            updates = "".join(f"update {FINAL_REFS}{uid} {c}\n" for uid, c in finals.items())
            request += f"start\n{updates}prepare\ncommit\n"
            expect += 3
        try:
            async with self._ref_pipe.lock:
                await self._ref_pipe.lines(request.encode(), expect)
        except GitError:
            await self._reload_head()
            if self._head == commit:  # main moved, the final refs did not: the results are on main
                self._finals.update(finals)
            raise
        self._finals.update(finals)
        self._head, self._head_tree = commit, tree
        self._commits_since_gc += 1
        if self._gc_every and self._commits_since_gc >= self._gc_every:
            self._commits_since_gc = 0
            await run_git(self.root, "gc", "--auto", "--quiet")

    async def _reload_head(self) -> None:
        self._head = await self._rev_parse(f"{BRANCH}^{{commit}}")
        self._head_tree = await self._rev_parse(f"{BRANCH}^{{tree}}") if self._head else None

    # ------------------------------------------------------------------ finding results

    async def find_final(self, uid: str) -> CommitInfo | None:
        """The commit holding the final result of run `uid` (and the notebook's path), or None."""
        self._require_open()
        commit = self._finals.get(uid)
        return await self._final_info(uid, commit) if commit else None

    async def _final_info(self, uid: str, commit: str) -> CommitInfo | None:
        obj = await self._object(commit)
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

    async def _existing_final(
        self, req: _Request, tree: str | None, batch_finals: Mapping[str, CommitInfo], staged: _Staged
    ) -> CommitInfo | None:
        """The final result already committed for this request's uid (writer only)."""
        assert req.record is not None
        uid = req.record.uid
        if uid in batch_finals:
            return batch_finals[uid]
        if uid in self._finals:
            return await self._final_info(uid, self._finals[uid])
        run = await self._run_json_at(tree, req.record.namespace, req.record.directory, staged)
        if not run or run.get("uid") != uid or run.get("final") is not True or not self._head:
            return None
        # The writer died after moving main and before writing the final ref: find that commit, repair.
        _, out, _ = await run_git(
            self.root, "rev-list", "-1", self._head, "--", f"{req.record.run_dir}/{RUN_JSON}"
        )
        commit = out.decode().strip()
        async with self._ref_pipe.lock:
            await self._ref_pipe.lines(
                f"start\nupdate {FINAL_REFS}{uid} {commit}\nprepare\ncommit\n".encode(), 3
            )
        self._finals[uid] = commit
        return CommitInfo(commit, str(run.get("path", req.record.notebook_path)))

    async def read_file(self, path: str, ref: str = "HEAD") -> bytes:
        """The bytes of `path` at `ref` (a commit id, branch or tag). FileNotFoundError if absent."""
        self._require_open()
        split_path(path)
        _check_ref(ref)
        obj = await self._object(f"{ref}:{path}")
        if obj is None or obj[1] != "blob":
            raise FileNotFoundError(f"{path} at {ref}")
        return obj[2]

    async def read_files(
        self, path: str, ref: str = "HEAD", *, max_files: int, max_bytes: int
    ) -> list[tuple[str, bytes]]:
        """The files at `path`: a file as `[(its name, bytes)]`, a folder as every file below it by path
        relative to it (sorted). Their count and sizes are checked against `max_files` and `max_bytes`
        before any content is read (ReadLimitExceeded); FileNotFoundError if `path` is absent."""
        self._require_open()
        path = path.rstrip("/")
        split_path(path)
        _check_ref(ref)
        async with self._check_pipe.lock:
            [line] = await self._check_pipe.lines(f"{ref}:{path}\n".encode(), 1)
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("blob", "tree"):
            raise FileNotFoundError(f"{path} at {ref}")
        oid, kind, size = parts
        if kind == "blob":
            listing = [(path.rsplit("/", 1)[-1], oid, int(size))]
        else:
            _, out, _ = await run_git(self.root, "ls-tree", "-r", "-l", "-z", oid)
            listing = []
            for item in out.split(b"\0"):
                if not item:
                    continue
                meta, raw_name = item.split(b"\t", 1)
                mode, entry_kind, entry_oid, entry_size = meta.split()
                if entry_kind == b"blob" and mode in (b"100644", b"100755"):
                    listing.append(
                        (raw_name.decode("utf-8", "surrogateescape"), entry_oid.decode(), int(entry_size))
                    )
        total = sum(entry[2] for entry in listing)
        if len(listing) > max_files or total > max_bytes:
            raise ReadLimitExceeded(
                f"{path} holds {len(listing)} files of {total} bytes, more than {max_files} files or "
                f"{max_bytes} bytes"
            )
        async with self._cat_pipe.lock:
            objects = await self._cat_pipe.objects([entry[1] for entry in listing])
        files = []
        for (name, _, _), obj in zip(listing, objects, strict=True):
            if obj is None:
                raise FileNotFoundError(f"{path}/{name} at {ref}")
            files.append((name, obj[2]))
        return sorted(files)

    @contextlib.asynccontextmanager
    async def open_blob(self, blob: str) -> AsyncIterator[asyncio.StreamReader]:
        """A blob's bytes as a stream from a one-off `git cat-file`, never held whole in memory (large
        spills, notebooks read cell by cell). `blob` is an id `stat_file` gave."""
        self._require_open()
        if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", blob):
            raise ValueError(f"invalid blob id {blob!r}")
        proc = await asyncio.create_subprocess_exec(
            *git_argv(self.git_dir, "cat-file", "blob", blob),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
            env=git_env(),
        )
        assert proc.stdout is not None
        try:
            yield proc.stdout
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()

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
        """Reads the trees level by level, each level in one pipelined `cat-file` exchange."""
        namespaces = {
            ns: e.oid
            for ns, e in (await self._read_tree(root)).items()
            if e.type == "tree" and not ns.startswith(("_", ".")) and (not namespace or ns == namespace)
        }
        ns_trees = dict(zip(namespaces, await self._read_trees(list(namespaces.values())), strict=True))
        run_dirs = [
            (ns, name, e.oid)
            for ns, entries in ns_trees.items()
            for name, e in entries.items()
            if e.type == "tree"
        ]
        run_trees = await self._read_trees([oid for _, _, oid in run_dirs])
        located = [
            (ns, name, tree[RUN_JSON].oid)
            for (ns, name, _), tree in zip(run_dirs, run_trees, strict=True)
            if RUN_JSON in tree
        ]
        async with self._cat_pipe.lock:
            blobs = await self._cat_pipe.objects([oid for _, _, oid in located])
        out: list[RunSummary] = []
        for (ns, name, _), obj in zip(located, blobs, strict=True):
            if obj is None:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out.append(_summary(ns, name, json.loads(obj[2])))
        return sorted(out, key=lambda r: (r.namespace, r.name))

    async def _read_trees(self, oids: list[str]) -> list[dict[str, TreeEntry]]:
        found: dict[str, dict[str, TreeEntry]] = {}
        for oid in oids:
            cached = self._trees.get(oid)
            if cached is not None:
                found[oid] = cached
        missing = [oid for oid in dict.fromkeys(oids) if oid not in found]
        if missing:
            async with self._cat_pipe.lock:
                objs = await self._cat_pipe.objects(missing)
            for oid, obj in zip(missing, objs, strict=True):
                if obj is None or obj[1] != "tree":
                    raise GitError(f"tree {oid} is missing")
                found[oid] = parse_tree(obj[2])  # not cached: a listing would flush the writer's trees
        return [found[oid] for oid in oids]

    async def _run_json_at(
        self, tree: str | None, namespace: str, name: str, staged: _Staged | None = None
    ) -> dict[str, Any] | None:
        if not tree:
            return None
        ns = (await self._read_tree(tree, staged)).get(namespace)
        run = (await self._read_tree(ns.oid, staged)).get(name) if ns and ns.type == "tree" else None
        entry = (await self._read_tree(run.oid, staged)).get(RUN_JSON) if run and run.type == "tree" else None
        if entry is None:
            return None
        known = self._json_meta.get(entry.oid)
        if known is not None:
            return known
        obj = await self._object(entry.oid)
        if obj is None:
            return None
        try:
            data = json.loads(obj[2])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def _read_tree(self, oid: str, staged: _Staged | None = None) -> dict[str, TreeEntry]:
        if staged is not None and oid in staged.trees:
            return staged.trees[oid]
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

    # ------------------------------------------------------------------ importing

    async def import_namespace(
        self, source: Path, tree: str, *, finals: Mapping[str, str], message: str, now: float | None = None
    ) -> CommitInfo:
        """Make `tree` (a namespace directory in the repository `source`) this empty repository's first
        commit, at `<namespace>/`: only the objects below `tree` are copied (`rev-list --objects` piped
        through `pack-objects` into `index-pack`). `finals` (uid -> notebook path) are the runs whose final
        result is in `tree`; their final refs point at the new commit (found via `Nbkube-Final-Path`
        trailers, as after a prune). Returns the commit and the namespace's directory."""
        self._require_open()
        if self.namespace is None:
            raise ValueError("import_namespace needs a store of one namespace")
        if len(tree) != OID_HEX_LEN or any(c not in "0123456789abcdef" for c in tree):
            raise ValueError(f"not a tree id: {tree!r}")
        async with self._write_lock:
            if self._head is not None:
                raise ValueError(f"{self.root} already has commits; import only into an empty repository")
            _, listing, _ = await run_git(source, "rev-list", "--objects", tree)
            await _copy_objects(source, self.root, listing)
            if self._fsync:
                await asyncio.to_thread(_syncfs, self.root)
            staged = _Staged()
            root = self._stage_tree(staged, {self.namespace: TreeEntry(TREE_MODE, "tree", tree)})
            body = "".join(f"Nbkube-Final-Path: {uid} {path}\n" for uid, path in sorted(finals.items()))
            text = f"{message.strip()}\n\n{body}" if body else f"{message.strip()}\n"
            stamp = time.time() if now is None else now
            commit = self._stage_commit(staged, root, None, text, self._committer, stamp)
            await self._flush(staged)
            await self._advance(commit, root, dict.fromkeys(finals, commit))
            return CommitInfo(commit, self.namespace)

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
            staged = _Staged()
            root: str | None = self._head_tree
            for run in doomed:
                root = await self._set_path(root, [run.namespace, run.directory or run.name], None, staged)
            if root is not None:
                await self._flush(staged)  # the trees must exist before _list_runs reads them back
                staged = _Staged()
            kept = await self._list_runs(root, None) if root else []
            finals = {r.uid: r.path for r in kept if r.final}
            message = f"nbkube: prune {len(doomed)} runs, history squashed\n\n" + "".join(
                f"Nbkube-Final-Path: {uid} {path}\n" for uid, path in sorted(finals.items())
            )
            commit = self._stage_commit(staged, root, None, message, self._committer, now)
            await self._flush(staged)
            lines = ["start", f"update {BRANCH} {commit}"]
            for uid in self._finals:
                ref = f"{FINAL_REFS}{uid}"
                lines.append(f"update {ref} {commit}" if uid in finals else f"delete {ref}")
            lines += ["prepare", "commit", ""]
            await run_git(self.root, "update-ref", "--stdin", input="\n".join(lines).encode())
            self._head, self._head_tree = commit, root
            self._finals = {uid: commit for uid in finals}
            await run_git(self.root, "reflog", "expire", "--expire=now", "--all")
            await run_git(self.root, "gc", "--prune=now", "--quiet")
            for pipe in (self._cat_pipe, self._check_pipe):
                await pipe.close()  # drop their view of the packs gc just replaced
            return PruneResult([f"{r.namespace}/{r.name}" for r in doomed], commit)


async def _copy_objects(source: Path, dest: Path, listing: bytes) -> None:
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


def _summary(ns: str, directory: str, data: dict[str, Any]) -> RunSummary:
    return RunSummary(
        namespace=ns,
        name=str(data.get("name") or directory),
        directory=directory,
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


def _write_files(items: Iterable[tuple[Path, bytes]]) -> None:
    for path, data in items:
        _write_file(path, data)


def _expect(expected: list[str], got: list[str]) -> None:
    if expected != got:
        raise GitError(f"git computed other object ids than we did: {got} != {expected}")


def _check_unique(paths: list[list[str]]) -> None:
    files = {tuple(p) for p in paths}
    if len(files) != len(paths):
        raise ValueError("the same path is given twice")
    for p in files:
        for i in range(1, len(p)):
            if p[:i] in files:
                raise ValueError(f"{'/'.join(p)} clashes with the file {'/'.join(p[:i])}")


class BoundedDict(OrderedDict[str, Any]):
    """A small LRU map."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _read_head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path`: one call for a whole batch instead of an fsync per object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC is None or _LIBC.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc if hasattr(libc, "syncfs") else None
    except OSError:
        return None


_LIBC = _load_libc()


def _discard(paths: list[Path]) -> None:
    """Delete temporary files in a worker thread, without waiting (open() sweeps any left over)."""
    if paths:
        asyncio.get_running_loop().run_in_executor(None, _unlink_all, paths)


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
