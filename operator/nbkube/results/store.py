"""One results repository: executed notebooks committed to a bare git repository on the operator's PVC.

The operator keeps one such repository per namespace (`nbkube.results.repositories.ResultsRepositories`,
`<root>/<namespace>.git`, created with `namespace=` so it holds only that namespace's directory); a
`ResultsStore` is one repository, a thin front over its parts:

    layout.py     where things are: run directories, file names, refs (the layout is drawn there)
    repo.py       the git directory: open and lock, the long-lived git processes, objects in and out, refs
    writer.py     the one writer: requests prepared in threads, committed in batches (idempotent finals)
    spills.py     how much of a run's spilled outputs is kept (`cap_spills`, pure)
    reader.py     files, blobs, notebooks and the runs at a ref
    prune.py      history rewrites: prune, and a namespace imported as a first commit
    staging.py, commits.py, _git.py    objects built in memory; commit messages; the git CLI

Each commit_run is one commit on `main`; its message names the run and carries trailers
(`nbkube.results.commits`). A final commit also sets `refs/nbkube/final/<uid>` (hidden from clones) so
`find_final` is one ref read.

Why the git CLI (and not pygit2 or dulwich):
- Correctness: it is the reference implementation, so "stock git reads the repository" and
  `git fsck --strict` hold by construction; it writes objects to a temporary file and renames them, and
  moves refs with lock files, so a SIGKILL at any moment leaves a consistent repository (see
  `nbkube.results.repo` for the flock and the debris a dead writer leaves). ResultsRepositories holds
  `<root>/nbkube-writer.flock` for every repository below root (`writer_lock=False` here).
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

Concurrency and idempotency: see `nbkube.results.writer` (one writer task, batches, a final result is
committed once). Bounded size: spilled outputs of a run are capped at `max_spill_bytes_per_run` in total
(`nbkube.results.spills`). Results outlive their NotebookRun; to reclaim space call `prune()`:

    await store.prune(older_than=timedelta(days=30), keep_last=20)   # per namespace, the newest 20 stay

(`nbkube.results.prune`). The writer flock is held for as long as the store is open, so only the
process that owns the store can prune. By hand, with the operator stopped (scaled to 0) and the PVC
mounted in a one-off pod running the operator image:
`python -m nbkube.results prune --root /results --older-than 30d --keep-last 20` prunes every
namespace's repository in turn (`python -m nbkube.results list|fsck --root ...` inspect them).

Users get results back over the operator's HTTP port (see `nbkube.results.http`), one file with
`GET /results/files/<path>?ref=<commit>`, which is what `nbkube fetch` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from pathlib import Path

import nbformat

from . import commits
from .branches import BranchCommit, BranchWriter
from .layout import check_component, split_path
from .prune import Pruner
from .reader import ResultsReader
from .records import CommitInfo, PruneResult, RunRecord, RunSummary, StoreClosedError, StoreLockedError
from .repo import Repository
from .spills import DEFAULT_MAX_SPILL_BYTES
from .writer import CommitWriter

__all__ = ["DEFAULT_MAX_SPILL_BYTES", "ResultsStore", "StoreClosedError", "StoreLockedError"]


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
        self.author_name = commits.clean(author_name)
        self.author_email = commits.clean(author_email)
        self._is_open = False
        self._repo = Repository(
            self.root,
            committer=f"{self.author_name} <{self.author_email}>",
            fsync=fsync,
            gc_every=gc_every,
            lock_timeout=lock_timeout,
            writer_lock=writer_lock,
            pipe_idle_seconds=pipe_idle_seconds,
        )
        self._writer = CommitWriter(
            self._repo,
            self._repo.main,
            author_name=self.author_name,
            max_spill_bytes_per_run=max_spill_bytes_per_run,
            max_batch=max_batch,
        )
        self._branches = BranchWriter(self._repo)
        self._reader = ResultsReader(self._repo)
        self._pruner = Pruner(self._repo, self._reader)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> ResultsStore:
        """Create the repository on first use; after a crash, remove what the dead writer left behind."""
        if self.namespace is not None:
            check_component(self.namespace, "namespace")
        await self._repo.open()
        self._is_open = True
        self._writer.start()
        return self

    async def close(self) -> None:
        """Finish the queued commits, then stop the writer and the git processes, and release the lock.

        From its first step on, the store takes no new request (StoreClosedError), so nothing is queued
        behind the writer's back; a request that still finds itself queued when the writer stops fails
        with StoreClosedError rather than waiting forever."""
        self._is_open = False
        await self._writer.stop()
        await self.release_processes()
        self._repo.release_lock()

    async def __aenter__(self) -> ResultsStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def release_processes(self) -> None:
        """Stop the long-lived git processes now (each after its current exchange); they restart on use."""
        await self._repo.release_processes()

    def running_processes(self) -> int:
        """How many of this store's long-lived git processes are running."""
        return self._repo.running_processes()

    @property
    def git_dir(self) -> Path:
        return self.root

    @property
    def head(self) -> str | None:
        """The commit `main` points to (None before the first commit)."""
        return self._repo.main.commit

    @property
    def max_spill_bytes_per_run(self) -> int:
        return self._writer.max_spill_bytes_per_run

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
            self._writer.prepare_run, record, notebook, spills or {}, final, time.time()
        )
        return await self._writer.submit(request)

    async def commit_files_of_run(self, record: RunRecord, files: Mapping[str, bytes]) -> CommitInfo:
        """Commit the final result of a run that has no notebook of its own (a sweep's parent): `files`
        by name (e.g. summary.csv, summary.json) in `<namespace>/<run>/`, beside its `nbkube.json`
        (whose path names `record.result_file`). Idempotent per uid like a final `commit_run`."""
        self._require_open()
        if self.namespace is not None and record.namespace != self.namespace:
            raise ValueError(f"{record.run_dir} does not belong in the repository of {self.namespace}")
        request = await asyncio.to_thread(
            self._writer.prepare_run, record, None, {}, True, time.time(), files
        )
        return await self._writer.submit(request)

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
        request = await asyncio.to_thread(self._writer.prepare_source, parts, nb, subject, time.time())
        return await self._writer.submit(request)

    async def start_branch(self, branch: str, base: str | None = None) -> str | None:
        """Creates `branch` (e.g. a session's) at commit `base` (None: main's head) unless it exists;
        its head."""
        self._require_open()
        return await self._branches.start(branch, base)

    async def commit_to_branch(
        self, branch: str, files: Mapping[str, bytes | Path], message: str, *, parent: str | None
    ) -> str:
        """One commit of `files` on `branch`, whose head must be `parent` (StaleBranch otherwise)."""
        self._require_open()
        if self.namespace is not None:
            for path in files:
                if split_path(path)[0] != self.namespace:
                    raise ValueError(f"{path} does not belong in the repository of {self.namespace}")
        return await self._branches.commit(branch, files, message, parent=parent, author=self._repo.committer)

    async def branch_log(
        self, branch: str, *, limit: int = 100, trailer: str | None = None
    ) -> list[BranchCommit]:
        """`branch`'s commits, newest first (with `trailer`, those whose message has that trailer)."""
        self._require_open()
        return await self._branches.log(branch, limit=limit, trailer=trailer)

    # ------------------------------------------------------------------ reading

    async def find_final(self, uid: str) -> CommitInfo | None:
        """The commit holding the final result of run `uid` (and the notebook's path), or None."""
        self._require_open()
        return await self._reader.find_final(uid)

    async def read_file(self, path: str, ref: str = "HEAD") -> bytes:
        """The bytes of `path` at `ref` (a commit id, branch or tag). FileNotFoundError if absent."""
        self._require_open()
        return await self._reader.read_file(path, ref)

    async def read_files(
        self, path: str, ref: str = "HEAD", *, max_files: int, max_bytes: int
    ) -> list[tuple[str, bytes]]:
        """The files at `path`: a file as `[(its name, bytes)]`, a folder as every file below it by path
        relative to it (sorted). Their count and sizes are checked against `max_files` and `max_bytes`
        before any content is read (ReadLimitExceeded); FileNotFoundError if `path` is absent."""
        self._require_open()
        return await self._reader.read_files(path, ref, max_files=max_files, max_bytes=max_bytes)

    @contextlib.asynccontextmanager
    async def open_blob(self, blob: str) -> AsyncIterator[asyncio.StreamReader]:
        """A blob's bytes as a stream from a one-off `git cat-file`, never held whole in memory (large
        spills, notebooks read cell by cell). `blob` is an id `stat_file` gave."""
        self._require_open()
        async with self._reader.open_blob(blob) as stream:
            yield stream

    async def stat_file(self, path: str, ref: str = "HEAD") -> tuple[str, int] | None:
        """(blob id, size) of `path` at `ref`, or None; cheap, reads no content."""
        self._require_open()
        return await self._reader.stat_file(path, ref)

    async def resolve(self, ref: str = "HEAD") -> str | None:
        """The commit id `ref` names, or None."""
        self._require_open()
        return await self._reader.resolve(ref)

    async def load_notebook(self, repo_path: str, ref: str = "HEAD") -> nbformat.NotebookNode:
        """A notebook stored in the repository (for `notebook.repoPath`), parsed and validated."""
        self._require_open()
        return await self._reader.load_notebook(repo_path, ref)

    async def list_runs(self, namespace: str | None = None, ref: str = "HEAD") -> list[RunSummary]:
        """The runs present at `ref`, sorted by namespace and name."""
        self._require_open()
        return await self._reader.list_runs(namespace, ref)

    # ------------------------------------------------------------------ rewriting history

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
        return await self._pruner.import_namespace(
            self.namespace, source, tree, finals=finals, message=message, now=now
        )

    async def prune(
        self,
        *,
        older_than: timedelta | None = None,
        keep_last: int | None = None,
        namespace: str | None = None,
        now: float | None = None,
    ) -> PruneResult:
        """Remove old runs and reclaim their space (see `nbkube.results.prune`). O(repository); run it rarely.

        A run goes when it is older than `older_than` (by its last commit) and, with `keep_last`, is not
        among the newest `keep_last` runs of its namespace. `keep_last` alone keeps only the newest N per
        namespace. Only namespace `namespace` is considered when given. History is squashed into one
        root commit so the removed results really leave the repository.
        """
        self._require_open()
        return await self._pruner.prune(
            older_than=older_than, keep_last=keep_last, namespace=namespace, now=now
        )
