"""Reading a results repository: files, blobs as streams, notebooks, the runs at a ref, final results.

Reads take no write lock: they go through the long-lived `cat-file` processes (one exchange per read, or
one pipelined exchange per tree level for listings), and a blob streamed whole comes from a one-off
`git cat-file` so it is never held in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import nbformat

from ._git import git_argv, git_env, run_git
from .layout import RUN_JSON, check_ref, split_path
from .records import CommitInfo, InvalidNotebookError, ReadLimitExceeded, RunSummary
from .repo import Repository

_BLOB_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class ResultsReader:
    """The reading part of a ResultsStore (which checks that the store is open before each call)."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo

    async def find_final(self, uid: str) -> CommitInfo | None:
        """The commit holding the final result of run `uid` (and the notebook's path), or None."""
        commit = self._repo.finals.get(uid)
        return await self._repo.final_info(uid, commit) if commit else None

    async def read_file(self, path: str, ref: str = "HEAD") -> bytes:
        """The bytes of `path` at `ref` (a commit id, branch or tag). FileNotFoundError if absent."""
        split_path(path)
        check_ref(ref)
        obj = await self._repo.object(f"{ref}:{path}")
        if obj is None or obj[1] != "blob":
            raise FileNotFoundError(f"{path} at {ref}")
        return obj[2]

    async def read_files(
        self, path: str, ref: str = "HEAD", *, max_files: int, max_bytes: int
    ) -> list[tuple[str, bytes]]:
        """The files at `path`: a file as `[(its name, bytes)]`, a folder as every file below it by path
        relative to it (sorted). Their count and sizes are checked against `max_files` and `max_bytes`
        before any content is read (ReadLimitExceeded); FileNotFoundError if `path` is absent."""
        path = path.rstrip("/")
        split_path(path)
        check_ref(ref)
        line = await self._check(f"{ref}:{path}")
        parts = line.split()
        if len(parts) != 3 or parts[1] not in ("blob", "tree"):
            raise FileNotFoundError(f"{path} at {ref}")
        oid, kind, size = parts
        if kind == "blob":
            listing = [(path.rsplit("/", 1)[-1], oid, int(size))]
        else:
            listing = await self._files_below(oid)
        total = sum(entry[2] for entry in listing)
        if len(listing) > max_files or total > max_bytes:
            raise ReadLimitExceeded(
                f"{path} holds {len(listing)} files of {total} bytes, more than {max_files} files or "
                f"{max_bytes} bytes"
            )
        async with self._repo.cat_pipe.lock:
            objects = await self._repo.cat_pipe.objects([entry[1] for entry in listing])
        files = []
        for (name, _, _), obj in zip(listing, objects, strict=True):
            if obj is None:
                raise FileNotFoundError(f"{path}/{name} at {ref}")
            files.append((name, obj[2]))
        return sorted(files)

    async def _files_below(self, tree: str) -> list[tuple[str, str, int]]:
        """(path relative to `tree`, blob id, size) of every regular file below it."""
        _, out, _ = await run_git(self._repo.root, "ls-tree", "-r", "-l", "-z", tree)
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
        return listing

    @contextlib.asynccontextmanager
    async def open_blob(self, blob: str) -> AsyncIterator[asyncio.StreamReader]:
        """A blob's bytes as a stream from a one-off `git cat-file`, never held whole in memory (large
        spills, notebooks read cell by cell). `blob` is an id `stat_file` gave."""
        if not _BLOB_ID.fullmatch(blob):
            raise ValueError(f"invalid blob id {blob!r}")
        proc = await asyncio.create_subprocess_exec(
            *git_argv(self._repo.root, "cat-file", "blob", blob),
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
        split_path(path)
        check_ref(ref)
        parts = (await self._check(f"{ref}:{path}")).split()
        if len(parts) != 3 or parts[1] != "blob":
            return None
        return parts[0], int(parts[2])

    async def resolve(self, ref: str = "HEAD") -> str | None:
        """The commit id `ref` names, or None."""
        check_ref(ref)
        parts = (await self._check(f"{ref}^{{commit}}")).split()
        return parts[0] if len(parts) == 3 and parts[1] == "commit" else None

    async def _check(self, spec: str) -> str:
        """`cat-file --batch-check`'s line for `spec`: "<oid> <type> <size>" or "<spec> missing"."""
        async with self._repo.check_pipe.lock:
            [line] = await self._repo.check_pipe.lines(f"{spec}\n".encode(), 1)
        return line

    async def load_notebook(self, repo_path: str, ref: str = "HEAD") -> nbformat.NotebookNode:
        """A notebook stored in the repository (for `notebook.repoPath`), parsed and validated."""
        data = await self.read_file(repo_path, ref)
        return await asyncio.to_thread(parse_notebook, data, repo_path)

    async def list_runs(self, namespace: str | None = None, ref: str = "HEAD") -> list[RunSummary]:
        """The runs present at `ref`, sorted by namespace and name."""
        check_ref(ref)
        root = await self._repo.object(f"{ref}^{{tree}}")
        if root is None:
            return []
        return await self.runs_in(root[0], namespace)

    async def runs_in(self, root: str, namespace: str | None) -> list[RunSummary]:
        """The runs in the tree `root` (of one namespace, when given). Reads the trees level by level,
        each level in one pipelined `cat-file` exchange."""
        repo = self._repo
        namespaces = {
            ns: e.oid
            for ns, e in (await repo.read_tree(root)).items()
            if e.type == "tree" and not ns.startswith(("_", ".")) and (not namespace or ns == namespace)
        }
        ns_trees = dict(zip(namespaces, await repo.read_trees(list(namespaces.values())), strict=True))
        run_dirs = [
            (ns, name, e.oid)
            for ns, entries in ns_trees.items()
            for name, e in entries.items()
            if e.type == "tree"
        ]
        run_trees = await repo.read_trees([oid for _, _, oid in run_dirs])
        located = [
            (ns, name, tree[RUN_JSON].oid)
            for (ns, name, _), tree in zip(run_dirs, run_trees, strict=True)
            if RUN_JSON in tree
        ]
        async with repo.cat_pipe.lock:
            blobs = await repo.cat_pipe.objects([oid for _, _, oid in located])
        out: list[RunSummary] = []
        for (ns, name, _), obj in zip(located, blobs, strict=True):
            if obj is None:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out.append(run_summary(ns, name, json.loads(obj[2])))
        return sorted(out, key=lambda r: (r.namespace, r.name))


def run_summary(ns: str, directory: str, data: dict[str, Any]) -> RunSummary:
    """A run directory's summary from its `nbkube.json`."""
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


def parse_notebook(data: bytes, where: str) -> nbformat.NotebookNode:
    try:
        nb = nbformat.reads(data.decode(), as_version=4)
        nbformat.validate(nb)
    except (ValueError, nbformat.ValidationError) as exc:
        raise InvalidNotebookError(f"{where} is not a valid notebook: {exc}") from exc
    return nb
