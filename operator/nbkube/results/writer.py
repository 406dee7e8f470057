"""The store's one writer: requests prepared in threads, committed in batches, one ref move per batch.

Callers validate, serialise and hash their notebooks in threads before queueing (`prepare_run`,
`prepare_source`), so 50 runs finishing at once all land, each with its own commit, in arrival order, at
the cost of a few batches. One writer task takes whatever is queued (up to `max_batch`), stages it as a
chain of commits, has git write the objects, and moves its branch once (`Repository.advance`, a
compare-and-swap on the old value). A caller that is cancelled while waiting still gets its result
committed. The branch is the writer's `tip` (main for runs; another ref would do for another writer).

Idempotency: a final result for a uid that already has one returns the existing CommitInfo instead of
committing twice (the final ref, mirrored in memory; then, for a crash between moving the branch and
writing that ref, the run's `nbkube.json` in the branch's tree, which also repairs the ref). A checkpoint
arriving after the final result is ignored the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import nbjson

from . import commits
from ._files import discard, unlink_all, write_file
from ._git import TreeEntry, file_blob_id, object_id, run_git
from .layout import OUTPUTS_DIR, RUN_JSON, check_component, run_path, spill_parts
from .records import CommitInfo, InvalidNotebookError, RunRecord, StoreClosedError
from .repo import Repository, Tip
from .spills import SpillSource, cap_spills
from .staging import BLOB_MODE, TREE_MODE, Staged, StagedFile, check_unique

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One commit to make, serialised and hashed (in a thread) before it is queued for the writer."""

    record: RunRecord | None  # None for a source notebook
    final: bool
    files: list[StagedFile]
    message: str
    author: str
    now: float
    path: str
    temp: list[Path]
    run_json: tuple[str, dict[str, Any]] | None = None  # blob id of nbkube.json and what matters in it
    future: asyncio.Future[CommitInfo] | None = None


class CommitWriter:
    """Commits prepared requests to `tip`'s branch of `repo`, one writer task, in batches."""

    def __init__(
        self, repo: Repository, tip: Tip, *, author_name: str, max_spill_bytes_per_run: int, max_batch: int
    ) -> None:
        self._repo = repo
        self._tip = tip
        self._author_name = author_name
        self.max_spill_bytes_per_run = max_spill_bytes_per_run
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._accepting = False

    def start(self) -> None:
        self._accepting = True
        self._task = asyncio.create_task(self._serve(), name=f"nbkube-results-writer:{self._repo.root}")

    async def stop(self) -> None:
        """Take no new request, let every queued one land, then stop the task. A request that still finds
        itself queued when the task stops fails with StoreClosedError rather than waiting forever."""
        self._accepting = False
        if self._task is not None:
            if not self._task.done():
                await self._queue.join()  # every queued commit lands before we stop
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            left = self._queue.get_nowait()
            self._queue.task_done()
            if left.future is not None and not left.future.done():
                left.future.set_exception(StoreClosedError("the results store closed before this commit"))

    # ------------------------------------------------------------------ preparing (in a thread)

    def prepare_run(
        self,
        record: RunRecord,
        nb: nbformat.NotebookNode | None,
        spills: Mapping[str, bytes | Path],
        final: bool,
        now: float,
        extra: Mapping[str, bytes] | None = None,
    ) -> Request:
        """Runs in a thread: validate, serialise, cap spills, hash, write temporary files. `nb` None:
        the run has no notebook of its own (a sweep's parent); `extra`: files of the run's directory
        (by name, e.g. a sweep's summary.csv), committed as given."""
        nb_bytes = None
        if nb is not None:
            copy = nbformat.NotebookNode(nb)
            copy["metadata"] = nbformat.NotebookNode(
                {**nb.get("metadata", {}), "nbkube": record.metadata(final=final)}
            )
            nb_bytes = notebook_bytes(copy)
        files: list[StagedFile] = []
        temp: list[Path] = []

        def stage(parts: list[str], data: bytes) -> str:
            tmp = self._repo.tmp_path()
            write_file(tmp, data)
            temp.append(tmp)
            oid = object_id("blob", data)
            files.append(StagedFile(parts, tmp, oid))
            return oid

        try:
            if nb_bytes is not None:
                stage([record.notebook], nb_bytes)
            for name in sorted(extra or {}):
                if name in (RUN_JSON, OUTPUTS_DIR) or (nb_bytes is not None and name == record.notebook):
                    raise ValueError(f"{name!r} is a name the run's directory keeps for itself")
                stage([check_component(name, "file name")], (extra or {})[name])
            sources = {name: (spill_parts(name), SpillSource(spills[name])) for name in sorted(spills)}
            limit = self.max_spill_bytes_per_run
            cuts = cap_spills({name: source.size for name, (_, source) in sources.items()}, limit)
            for cut in cuts:
                parts, source = sources[cut.name]
                if cut.truncated:
                    stage(parts, source.head(cut.stored) + cut.marker(limit))
                elif source.git_path is not None:  # git reads the file itself
                    files.append(StagedFile(parts, source.git_path, file_blob_id(source.git_path)))
                else:
                    stage(parts, source.whole())
            run_json = {
                **record.metadata(final=final),
                "name": record.name,
                "path": record.result_path,
                "spills": {cut.name: cut.info() for cut in cuts},
                "committedAt": datetime.fromtimestamp(now, UTC).isoformat(),
                "committedAtUnix": now,
            }
            json_bytes = (json.dumps(run_json, indent=1, sort_keys=True, default=str) + "\n").encode()
            json_oid = stage([RUN_JSON], json_bytes)
            check_unique([f.parts for f in files])
        except BaseException:
            unlink_all(temp)
            raise
        return Request(
            record=record,
            final=final,
            files=files,
            message=commits.run_message(record, final),
            author=commits.run_author(self._author_name, record),
            now=now,
            path=record.result_path,
            temp=temp,
            run_json=(json_oid, {"uid": record.uid, "final": final, "path": record.result_path}),
        )

    def prepare_source(
        self, parts: list[str], nb: nbformat.NotebookNode, subject: str, now: float
    ) -> Request:
        """Runs in a thread: a source notebook to commit at `parts` (checked by the caller)."""
        path = "/".join(parts)
        data = notebook_bytes(nb)
        tmp = self._repo.tmp_path()
        write_file(tmp, data)
        return Request(
            record=None,
            final=False,
            files=[StagedFile(parts, tmp, object_id("blob", data))],
            message=f"{subject}\n\nNbkube-Source: {path}\n",
            author=self._repo.committer,
            now=now,
            path=path,
            temp=[tmp],
        )

    async def submit(self, request: Request) -> CommitInfo:
        """Queue a prepared request for the writer and wait until it landed (or failed)."""
        try:
            if not self._accepting:
                raise StoreClosedError("the results store is not open")
            if request.run_json is not None:
                self._repo.run_json_cache[request.run_json[0]] = request.run_json[1]
            request.future = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(request)
            # shield: a cancelled caller must not stop the commit it asked for, only stop waiting for it
            return await asyncio.shield(request.future)
        finally:
            if request.future is None or request.future.done():
                discard(request.temp)
            else:
                request.future.add_done_callback(lambda _: discard(request.temp))

    # ------------------------------------------------------------------ the writer task

    async def _serve(self) -> None:
        """Takes every queued request, commits them as a chain, moves the branch once."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self._max_batch:
                batch.append(self._queue.get_nowait())
            try:
                async with self._repo.write_lock:
                    try:
                        await self._commit_batch(batch)
                    except Exception:
                        if len(batch) == 1:
                            raise
                        log.warning("results batch of %d failed; committing them one by one", len(batch))
                        # one bad request (e.g. a spill file changed) must not sink the rest
                        for req in batch:
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

    async def _commit_batch(self, batch: list[Request]) -> None:
        repo, staged = self._repo, Staged()
        head, tree = self._tip.commit, self._tip.tree
        new_finals: dict[str, CommitInfo] = {}
        done: list[tuple[Request, CommitInfo]] = []
        for req in batch:
            try:
                existing = await self._existing_final(req, tree, new_finals, staged) if req.record else None
                if existing is not None:
                    done.append((req, existing))
                    continue
                new_tree = tree
                if req.record is not None:  # a run's directory is replaced as a whole
                    run_dir = TreeEntry(TREE_MODE, "tree", staged.files_tree(req.files))
                    parts = [req.record.namespace, req.record.directory]
                    new_tree = await repo.set_path(new_tree, parts, run_dir, staged)
                for f in req.files if req.record is None else []:
                    entry = TreeEntry(BLOB_MODE, "blob", f.oid)
                    new_tree = await repo.set_path(new_tree, f.parts, entry, staged)
                    staged.blobs[f.oid] = f.source
                if new_tree == tree and head is not None:
                    done.append((req, CommitInfo(head, req.path)))
                    continue
                commit = staged.commit(
                    new_tree, head, req.message, author=req.author, committer=repo.committer, now=req.now
                )
                head, tree = commit, new_tree
                info = CommitInfo(commit, req.path)
                if req.record is not None and req.final:
                    new_finals[req.record.uid] = info
                done.append((req, info))
            except Exception as exc:  # this request is bad (e.g. a path clash); the others go on
                if req.future is not None and not req.future.done():
                    req.future.set_exception(exc)
        if head != self._tip.commit:
            assert head is not None  # (it moved: to a commit)
            await repo.write_objects(staged)
            await repo.advance(self._tip, head, tree, {uid: info.commit for uid, info in new_finals.items()})
        for req, info in done:
            if req.future is not None and not req.future.done():
                req.future.set_result(info)

    async def _existing_final(
        self, req: Request, tree: str | None, batch_finals: Mapping[str, CommitInfo], staged: Staged
    ) -> CommitInfo | None:
        """The final result already committed for this request's uid."""
        assert req.record is not None
        repo, uid = self._repo, req.record.uid
        if uid in batch_finals:
            return batch_finals[uid]
        if uid in repo.finals:
            return await repo.final_info(uid, repo.finals[uid])
        run = await repo.run_json_at(tree, req.record.namespace, req.record.directory, staged)
        if not run or run.get("uid") != uid or run.get("final") is not True or not self._tip.commit:
            return None
        # The writer died after moving the branch and before writing the final ref: find that commit, repair.
        _, out, _ = await run_git(
            repo.root,
            "rev-list",
            "-1",
            self._tip.commit,
            "--",
            run_path(req.record.namespace, req.record.directory, RUN_JSON),
        )
        commit = out.decode().strip()
        await repo.set_final_ref(uid, commit)
        return CommitInfo(commit, str(run.get("path", req.record.result_path)))


def notebook_bytes(nb: nbformat.NotebookNode) -> bytes:
    """The notebook as the repository stores it; InvalidNotebookError unless it is valid nbformat."""
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise InvalidNotebookError(f"not a valid notebook: {exc.message}") from exc
    return (nbjson.writes(nb) + "\n").encode()
