"""One results repository per namespace: `<root>/<namespace>.git`, each a `ResultsStore`.

A namespace's repository holds only `<namespace>/...` (the paths keep the form of the single repository
of earlier versions, so `status.result.path` means the same and a `notebook.repoPath` can be copied from
an earlier run's status), so cloning or reading it never reaches another namespace's objects.

    <root>/nbkube-writer.flock            the writer lock of the whole root (see below)
    <root>/<namespace>.git                bare repository of one namespace (created on its first commit)
    <root>/legacy-single-repository.git  the single repository of an earlier version, after migration
                                          (so a namespace of that name gets no results repository)

Resources: one flock for the root, held from `open()` to `close()`, proves this is the only writer of
every repository below it; a store therefore takes no lock of its own (`writer_lock=False`), and it
removes a dead writer's debris when it is first opened, which is safe under the root lock. Stores are
opened on first use and stay open (their state is bounded caches and one idle writer task); their
long-lived git processes start on the first request and stop after `pipe_idle_seconds` without one, so
the git processes running are those of the namespaces in use, not one set per namespace.

Migration: when `<root>` itself is a bare repository (`<root>/HEAD`, the layout of earlier versions),
`open()` imports each namespace directory at its HEAD into `<namespace>.git` as one commit (only that
directory's objects are copied), points the final refs of the runs whose final result is at HEAD at it,
then moves the old repository aside to `<root>/legacy-single-repository.git`; nothing is deleted.
Commit ids of the old repository do not resolve in the new ones; paths at HEAD do. A crash part way
through is finished by the next `open()`: a namespace already imported is skipped, a half-done move
(`legacy-single-repository.git.partial`) is completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import nbformat

from ._files import acquire_flock, is_git_dir
from ._git import run_git
from .branches import BranchCommit
from .layout import FLOCK_NAME
from .records import CommitInfo, RunRecord, RunSummary, StoreClosedError
from .store import ResultsStore

log = logging.getLogger(__name__)

RESERVED_NAMESPACE = "legacy-single-repository"
LEGACY_NAME = f"{RESERVED_NAMESPACE}.git"
LEGACY_PARTIAL = f"{LEGACY_NAME}.partial"
REPO_SUFFIX = ".git"
NEW_SUFFIX = ".new"  # <namespace>.git.new: a repository being created
DEFAULT_PIPE_IDLE_SECONDS = 30.0
DEFAULT_MAX_ACTIVE = 16
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IMPORTED = "Nbkube-Imported-From"


def valid_namespace(namespace: object) -> bool:
    """A Kubernetes namespace name (a DNS-1123 label of at most 63 characters) that may have a results
    repository: `legacy-single-repository` may not, its `.git` is where a migrated repository goes."""
    return (
        isinstance(namespace, str)
        and len(namespace) <= 63
        and bool(_DNS_LABEL.match(namespace))
        and namespace != RESERVED_NAMESPACE
    )


class ResultsRepositories:
    """Every namespace's results repository below `root`. `await open()` before use, `await close()` after.

    `store_kwargs` go to each `ResultsStore` (fsync, max_spill_bytes_per_run, pipe_idle_seconds, ...);
    `lock_timeout` also bounds the wait for the root's writer lock. At most `max_active` namespaces are
    worked on at once through this object (others wait their turn) and at most that many keep their git
    processes between operations (the least recently used stop theirs first).
    """

    def __init__(self, root: Path, *, max_active: int = DEFAULT_MAX_ACTIVE, **store_kwargs: Any) -> None:
        self.root = Path(root).absolute()
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        self._max_active = max_active
        self._busy: dict[str, int] = {}  # namespace -> operations in progress through this object
        self._busy_changed = asyncio.Condition()
        self._warm: OrderedDict[str, None] = OrderedDict()  # stores used lately, oldest first
        self._releases: set[asyncio.Task[None]] = set()
        store_kwargs.setdefault("pipe_idle_seconds", DEFAULT_PIPE_IDLE_SECONDS)
        for reserved in ("namespace", "writer_lock"):
            if reserved in store_kwargs:
                raise TypeError(f"{reserved} is set by ResultsRepositories")
        self._store_kwargs = store_kwargs
        self._lock_timeout = float(store_kwargs.get("lock_timeout", 60.0))
        self._flock_fd: int | None = None
        self._known: set[str] = set()  # namespaces with a repository on disk
        self._stores: dict[str, ResultsStore] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> ResultsRepositories:
        """Take the root's writer lock, migrate a single repository of an earlier version, find the
        namespaces' repositories."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self._flock_fd = await acquire_flock(self.root / FLOCK_NAME, self._lock_timeout)
        try:
            await self._finish_move_aside()
            if await asyncio.to_thread(is_git_dir, self.root):
                await self._migrate()
            self._known = set(await asyncio.to_thread(_find_repositories, self.root))
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """Close every open store (their queued commits land first), then release the writer lock."""
        for task in list(self._releases):
            with contextlib.suppress(Exception):
                await task
        stores, self._stores = list(self._stores.values()), {}
        self._warm.clear()
        try:
            for store in stores:
                await store.close()
        finally:
            fd, self._flock_fd = self._flock_fd, None
            if fd is not None:
                os.close(fd)  # releases the flock

    async def __aenter__(self) -> ResultsRepositories:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_open(self) -> None:
        if self._flock_fd is None:
            raise StoreClosedError("the results repositories are not open")

    # ------------------------------------------------------------------ stores

    def namespaces(self) -> list[str]:
        """The namespaces that have a repository, sorted."""
        return sorted(self._known)

    def repository_path(self, namespace: str) -> Path:
        """Where `namespace`'s repository lives (ValueError for a name that is not a namespace name)."""
        if not valid_namespace(namespace):
            raise ValueError(f"not a Kubernetes namespace name: {namespace!r}")
        return self.root / f"{namespace}{REPO_SUFFIX}"

    async def repository(self, namespace: str) -> ResultsStore | None:
        """The open store of `namespace`, or None when it has no repository (or is not a namespace name).
        Never creates a repository."""
        self._require_open()
        if not valid_namespace(namespace) or namespace not in self._known:
            return None
        return await self._store(namespace, create=False)

    async def _store(self, namespace: str, *, create: bool) -> ResultsStore | None:
        store = self._stores.get(namespace)
        if store is not None:
            return store
        path = self.repository_path(namespace)
        async with self._opening.setdefault(namespace, asyncio.Lock()):
            store = self._stores.get(namespace)
            if store is not None:
                return store
            if not create and not await asyncio.to_thread(is_git_dir, path):
                self._known.discard(namespace)
                return None
            if create and not await asyncio.to_thread(path.exists):
                await self._create(path)
            store = ResultsStore(path, namespace=namespace, writer_lock=False, **self._store_kwargs)
            await store.open()
            self._stores[namespace] = store
            self._known.add(namespace)
            return store

    @contextlib.asynccontextmanager
    async def _active(self, namespace: str) -> AsyncIterator[None]:
        """Bound the namespaces worked on at once, and the stores that keep their git processes."""
        async with self._busy_changed:
            await self._busy_changed.wait_for(
                lambda: namespace in self._busy or len(self._busy) < self._max_active
            )
            self._busy[namespace] = self._busy.get(namespace, 0) + 1
        try:
            yield
        finally:
            async with self._busy_changed:
                self._busy[namespace] -= 1
                if not self._busy[namespace]:
                    del self._busy[namespace]
                self._busy_changed.notify_all()
            self._warm[namespace] = None
            self._warm.move_to_end(namespace)
            self._cool_down()

    def _cool_down(self) -> None:
        """Stop the git processes of the least recently used stores beyond `max_active`."""
        idle = [ns for ns in self._warm if ns not in self._busy]
        for namespace in idle[: max(0, len(self._warm) - self._max_active)]:
            del self._warm[namespace]
            store = self._stores.get(namespace)
            if store is not None and store.running_processes():
                task = asyncio.create_task(store.release_processes())
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)

    async def _create(self, path: Path) -> None:
        """`git init` beside `path`, then rename: a namespace's repository is there whole or not at all."""
        new = path.with_name(path.name + NEW_SUFFIX)
        await asyncio.to_thread(shutil.rmtree, new, True)  # debris of a crash (we hold the writer lock)
        await run_git(new, "init", "--quiet", "--bare", "--initial-branch=main", str(new))
        await asyncio.to_thread(new.rename, path)
        await asyncio.to_thread(_fsync_dir, path.parent)

    def running_processes(self) -> int:
        """Long-lived git processes running across every open store."""
        return sum(store.running_processes() for store in self._stores.values())

    # ------------------------------------------------------------------ the operations

    async def commit_run(
        self,
        record: RunRecord,
        notebook: nbformat.NotebookNode,
        spills: Mapping[str, bytes | Path] | None = None,
        *,
        final: bool,
    ) -> CommitInfo:
        """`ResultsStore.commit_run` in `record.namespace`'s repository, created on first use."""
        self._require_open()
        async with self._active(record.namespace):
            store = await self._store(record.namespace, create=True)
            assert store is not None
            return await store.commit_run(record, notebook, spills, final=final)

    async def commit_files_of_run(self, record: RunRecord, files: Mapping[str, bytes]) -> CommitInfo:
        """`ResultsStore.commit_files_of_run` in `record.namespace`'s repository, created on first use."""
        self._require_open()
        async with self._active(record.namespace):
            store = await self._store(record.namespace, create=True)
            assert store is not None
            return await store.commit_files_of_run(record, files)

    async def start_branch(self, namespace: str, branch: str, base: str | None) -> str | None:
        """`ResultsStore.start_branch` in `namespace`'s repository, created on first use."""
        self._require_open()
        async with self._active(namespace):
            store = await self._store(namespace, create=True)
            assert store is not None
            return await store.start_branch(branch, base)

    async def commit_files(
        self,
        namespace: str,
        branch: str,
        files: Mapping[str, bytes | Path],
        message: str,
        *,
        parent: str | None,
    ) -> str:
        """`ResultsStore.commit_to_branch` in `namespace`'s repository."""
        self._require_open()
        async with self._active(namespace):
            store = await self._store(namespace, create=True)
            assert store is not None
            return await store.commit_to_branch(branch, files, message, parent=parent)

    async def history(
        self, namespace: str, ref: str, *, limit: int, trailer: str | None = None
    ) -> list[BranchCommit]:
        """`ResultsStore.branch_log` in `namespace`'s repository; FileNotFoundError when absent."""
        store = await self.repository(namespace)
        if store is None:
            raise FileNotFoundError(ref)
        async with self._active(namespace):
            return await store.branch_log(ref, limit=limit, trailer=trailer)

    async def read_file(self, namespace: str, path: str, ref: str = "HEAD") -> bytes:
        """The bytes of `path` at `ref` in `namespace`'s repository; FileNotFoundError if absent there
        (also when the namespace has no repository). Other namespaces are never consulted."""
        store = await self.repository(namespace)
        if store is None:
            raise FileNotFoundError(f"{path} at {ref}")
        async with self._active(namespace):
            return await store.read_file(path, ref)

    async def read_files(
        self, namespace: str, path: str, ref: str = "HEAD", *, max_files: int, max_bytes: int
    ) -> list[tuple[str, bytes]]:
        """`ResultsStore.read_files` in `namespace`'s repository; FileNotFoundError if absent there."""
        store = await self.repository(namespace)
        if store is None:
            raise FileNotFoundError(f"{path} at {ref}")
        async with self._active(namespace):
            return await store.read_files(path, ref, max_files=max_files, max_bytes=max_bytes)

    async def find_final(self, namespace: str, uid: str) -> CommitInfo | None:
        store = await self.repository(namespace)
        if store is None:
            return None
        async with self._active(namespace):
            return await store.find_final(uid)

    async def list_runs(self, namespace: str) -> list[RunSummary]:
        store = await self.repository(namespace)
        if store is None:
            return []
        async with self._active(namespace):
            return await store.list_runs(namespace)

    # ------------------------------------------------------------------ migration

    async def _migrate(self) -> None:
        """Import each namespace of the single repository at `root` into its own, then move it aside."""
        legacy = ResultsStore(self.root, writer_lock=False, fsync=self._store_kwargs.get("fsync", True))
        await legacy.open()
        try:
            head = legacy.head
            namespaces: dict[str, str] = {}
            skipped: list[str] = []
            if head is not None:
                _, out, _ = await run_git(self.root, "ls-tree", "-z", f"{head}^{{tree}}")
                for item in out.decode("utf-8", "surrogateescape").split("\0"):
                    if not item:
                        continue
                    meta, name = item.split("\t", 1)
                    _mode, kind, oid = meta.split()
                    if kind == "tree" and valid_namespace(name):
                        namespaces[name] = oid
                    else:
                        skipped.append(name)
            for namespace, tree in sorted(namespaces.items()):
                runs = await legacy.list_runs(namespace)
                finals = {r.uid: r.path for r in runs if r.final}
                store = await self._store(namespace, create=True)
                assert store is not None
                if store.head is not None:
                    if await _imported_from(store, head):
                        log.info("results: namespace %s was already imported from %s", namespace, head)
                    else:
                        log.warning(
                            "results: %s already has results; namespace %s of the single repository "
                            "was not imported (it stays in %s)",
                            store.git_dir,
                            namespace,
                            LEGACY_NAME,
                        )
                    continue
                message = (
                    f"nbkube: import {namespace} from the single results repository\n\n{_IMPORTED}: {head}\n"
                )
                info = await store.import_namespace(self.root, tree, finals=finals, message=message)
                log.info(
                    "results: imported namespace %s (%d runs, %d final) from the single repository at %s "
                    "into %s as commit %s",
                    namespace,
                    len(runs),
                    len(finals),
                    head,
                    store.git_dir,
                    info.commit,
                )
            if skipped:
                log.warning(
                    "results: not imported, not namespace directories (they stay in %s): %s",
                    LEGACY_NAME,
                    ", ".join(sorted(skipped)),
                )
        finally:
            await legacy.close()
        await asyncio.to_thread(_move_aside, self.root)
        log.info("results: the single repository of an earlier version is now %s", self.root / LEGACY_NAME)

    async def _finish_move_aside(self) -> None:
        if await asyncio.to_thread((self.root / LEGACY_PARTIAL).is_dir):
            log.warning("results: finishing the interrupted move of the single repository aside")
            await asyncio.to_thread(_move_aside, self.root)


async def _imported_from(store: ResultsStore, legacy_head: str | None) -> bool:
    _, out, _ = await run_git(store.git_dir, "log", "--format=%B", "--reverse", "main", check=False)
    return f"{_IMPORTED}: {legacy_head}" in out.decode(errors="replace")


def _find_repositories(root: Path) -> list[str]:
    return [
        p.name[: -len(REPO_SUFFIX)]
        for p in root.iterdir()
        if p.name.endswith(REPO_SUFFIX) and valid_namespace(p.name[: -len(REPO_SUFFIX)]) and is_git_dir(p)
    ]


def _move_aside(root: Path) -> None:
    """Move the single repository's files (everything at `root` that is not a namespace's repository or
    the writer lock) into `legacy-single-repository.git`, through a `.partial` directory so a crash
    part way is finished next time. An existing legacy directory is never overwritten."""
    partial = root / LEGACY_PARTIAL
    partial.mkdir(exist_ok=True)
    keep = {FLOCK_NAME, LEGACY_NAME, LEGACY_PARTIAL}
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name in keep or name.startswith(f"{LEGACY_NAME}-"):
            continue
        if name.endswith(REPO_SUFFIX + NEW_SUFFIX) and valid_namespace(name.split(".")[0]):
            continue
        if name.endswith(REPO_SUFFIX) and valid_namespace(name[: -len(REPO_SUFFIX)]):
            continue
        entry.rename(partial / name)
    target = root / LEGACY_NAME
    if target.exists():
        target = root / f"{LEGACY_NAME}-{time.strftime('%Y%m%dT%H%M%S')}"
    partial.rename(target)
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    """Make renames in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
