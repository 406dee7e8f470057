"""What a session's notebook starts as, and the commit its branch starts from.

Empty, inline cells, a ConfigMap key, a path in the namespace's results repository (as runs take
them, run/source.py), or a fork: a commit of another session of the namespace (its head by default)
or a run's final result. A fork's branch starts at that commit, so `git log` shows where it came from.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import nbformat
from nbformat import NotebookNode

from nbkube.api import NotebookSource, Reason
from nbkube.api.session import SessionNotebook
from nbkube.kernelwork.failures import Failure
from nbkube.kube import Kube, run_path, session_path
from nbkube.run import source
from nbkube.session.work import SessionStore


@dataclass
class Start:
    notebook: NotebookNode
    base: str | None  # the commit the branch starts from; None: the repository's main branch
    origin: str  # for the first commit's message


def empty_notebook(kernel_name: str) -> NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": kernel_name, "language": "python"}
    return nb


async def starting_notebook(
    kube: Kube, store: SessionStore, namespace: str, spec: SessionNotebook, kernel_name: str
) -> Start | Failure:
    """The notebook and base commit, or why there is none (NotebookNotFound, InvalidNotebook,
    ForkNotFound). Only this namespace's objects and repository are read."""
    try:
        if spec.fork is not None:
            return await _fork(kube, store, namespace, spec, kernel_name)
        if spec.cells is not None:
            return Start(
                source.from_cells(NotebookSource(cells=spec.cells), kernel_name), None, "inline cells"
            )
        if spec.config_map_ref is not None:
            ref = spec.config_map_ref
            nb = await source.from_config_map(kube, namespace, ref.name, ref.key)
            return Start(nb, None, f"ConfigMap {ref.name} key {ref.key}")
        if spec.repo_path is not None:
            raw = await _read(store, namespace, spec.repo_path, "HEAD")
            if raw is None:
                return Failure(
                    Reason.NOTEBOOK_NOT_FOUND,
                    f"{spec.repo_path} not found in this namespace's results repository",
                )
            nb = await asyncio.to_thread(
                source.parse_notebook, raw, f"results repository path {spec.repo_path}"
            )
            return Start(nb, None, spec.repo_path)
    except source.NotebookUnavailable as exc:
        return Failure(Reason.NOTEBOOK_NOT_FOUND, str(exc))
    except source.InvalidNotebook as exc:
        return Failure(Reason.INVALID_NOTEBOOK, str(exc))
    return Start(empty_notebook(kernel_name), None, "an empty notebook")


async def _read(store: SessionStore, namespace: str, path: str, ref: str) -> bytes | None:
    if not path.startswith(f"{namespace}/"):
        return None  # another namespace's path: as absent as a missing one (its repository is never opened)
    try:
        return await store.read_file(namespace, path, ref)
    except (FileNotFoundError, ValueError):
        return None


async def _fork(
    kube: Kube, store: SessionStore, namespace: str, spec: SessionNotebook, kernel_name: str
) -> Start | Failure:
    fork = spec.fork
    assert fork is not None
    if fork.session is not None:
        body = await kube.get_or_none(session_path(namespace, fork.session))
        status = (body or {}).get("status") or {}
        path, commit = status.get("path"), fork.commit or status.get("head")
        what = f"session {fork.session}" + (f" at {fork.commit}" if fork.commit else "")
        if body is None:
            return Failure(Reason.FORK_NOT_FOUND, f"NotebookSession {namespace}/{fork.session} not found")
    else:
        assert fork.run is not None
        body = await kube.get_or_none(run_path(namespace, fork.run))
        result = ((body or {}).get("status") or {}).get("result") or {}
        path, commit = result.get("path"), result.get("commit")
        what = f"run {fork.run}"
        if body is None:
            return Failure(Reason.FORK_NOT_FOUND, f"NotebookRun {namespace}/{fork.run} not found")
    if not path or not commit:
        return Failure(Reason.FORK_NOT_FOUND, f"{what} has no committed notebook to fork from yet")
    raw = await _read(store, namespace, path, commit)
    if raw is None:
        return Failure(Reason.FORK_NOT_FOUND, f"{what}: {path} is not at commit {commit[:12]}")
    nb = await asyncio.to_thread(source.parse_notebook, raw, f"{what} ({path})")
    nb.metadata.setdefault("kernelspec", empty_notebook(kernel_name).metadata["kernelspec"])
    nb.metadata.pop("nbkube", None)  # a run's record (uid, parameters, state) is not the session's
    return Start(nb, commit, f"{what} ({commit[:12]})")
