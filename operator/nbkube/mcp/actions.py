"""What each `nbkube mcp` tool does, synchronously, with the CLI's own functions: ClusterClient for
NotebookSessions and NotebookRuns, SessionApi for a session's operations through the user API.

Every failure is a CliError whose message says what to do (the CLI's words); the server turns it into a
tool error. Nothing here prints: stdout is the MCP wire.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbkube.api.session import SessionState
from nbkube.api.states import TERMINAL_RUN_STATES
from nbkube.cli import fetch, run, sessionops, sessions
from nbkube.cli.errors import CliError, UsageError
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, run_state, session_state
from nbkube.cli.userapi import UserApi, UserApiError
from nbkube.userapi import paths

DEFAULT_READY_SECONDS = 300
DEFAULT_RUN_SECONDS = 600
NOTEBOOK_KEY = "notebook.ipynb"


class Nbkube:
    """The user's cluster as the tools see it: one ClusterClient per namespace, kept for the server's
    life (keep-alive connections make a tool call cost one request, not a TLS handshake)."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self._lock = threading.Lock()
        self._clients: dict[str, ClusterClient] = {}
        first = ClusterClient(ClusterOptions(kubeconfig, context, namespace))
        self.namespace = first.namespace  # a tool's default: -n, else the context's namespace
        self._clients[self.namespace] = first

    def client(self, namespace: str | None = None) -> ClusterClient:
        key = namespace or self.namespace
        with self._lock:
            if key not in self._clients:
                self._clients[key] = ClusterClient(ClusterOptions(self.kubeconfig, self.context, key))
            return self._clients[key]

    def close(self) -> None:
        with self._lock:
            for kube in self._clients.values():
                kube.close()
            self._clients.clear()

    # -- sessions as objects -----------------------------------------------------------------------

    def create_session(
        self,
        namespace: str | None,
        name: str,
        environment: str,
        cells: list[str] | None,
        notebook_path: str | None,
        repo_path: str | None,
        from_run: str | None,
        files: list[str] | None,
        parameters: dict[str, Any] | None,
        idle_timeout_seconds: int | None,
        wait_seconds: float,
    ) -> dict[str, Any]:
        """Creates the session as `nbkube session create` does (a local notebook and files uploaded in
        a ConfigMap it owns) and waits for Ready."""
        kube = self.client(namespace)
        run.check_name(name, "session")
        starts = [x for x in (cells, notebook_path, repo_path, from_run) if x is not None]
        if len(starts) > 1:
            raise UsageError("give at most one of cells, notebook_path, repo_path and from_run")
        args = argparse.Namespace(
            env=environment,
            from_file=Path(notebook_path).expanduser() if notebook_path else None,
            cells=cells or None,
            repo_path=repo_path,
            from_run=from_run,
            files=[Path(f).expanduser() for f in files or ()],
            parameters=_assignments(parameters),
            idle_timeout=str(idle_timeout_seconds) if idle_timeout_seconds is not None else None,
            max_lifetime=None,
            execution_timeout=None,
        )
        sessions.create_session(kube, *sessions.session_objects(args, name))
        return self.wait_ready(kube, name, wait_seconds)

    def wait_ready(self, kube: ClusterClient, name: str, wait_seconds: float) -> dict[str, Any]:
        """The session once it is Ready; a CliError when it ended or is still starting at the deadline."""
        deadline = time.monotonic() + wait_seconds
        session = _last(
            kube.watch_session(name, lambda s: session_state(s) != SessionState.PENDING, deadline)
        )
        state = session_state(session)
        status = session.get("status") or {}
        why = ": ".join(part for part in (status.get("reason"), status.get("message")) if part) or state
        if state == SessionState.ENDED:
            raise CliError(
                f"session {name} ended before it was Ready ({why}); session_delete it and fix that"
            )
        if state != SessionState.READY:
            raise CliError(
                f"session {name} is still {state} after {wait_seconds:.0f}s ({why}); it keeps starting: "
                "session_list shows when it is Ready"
            )
        return session

    def list_sessions(self, namespace: str | None) -> list[dict[str, Any]]:
        found = self.client(namespace).list_sessions()
        found.sort(key=lambda s: s["metadata"].get("creationTimestamp") or "")
        header = [h.lower().replace("-", "_") for h in sessions.HEADER]
        return [dict(zip(header, sessions.session_row(s), strict=True)) for s in found]

    def delete_session(self, namespace: str | None, name: str) -> str:
        kube = self.client(namespace)
        session = kube.find_session(name)
        kube.delete_session(name)
        branch = (session.get("status") or {}).get("branch")
        kept = f"; its history stays on branch {branch} of the results repository" if branch else ""
        return f"notebooksession {kube.namespace}/{name} deleted{kept}"

    def fork_session(
        self,
        namespace: str | None,
        source: str,
        name: str,
        at_commit: str | None,
        environment: str | None,
        wait_seconds: float,
    ) -> dict[str, Any]:
        kube = self.client(namespace)
        run.check_name(name, "session")
        found = kube.find_session(source)
        if not (found.get("status") or {}).get("branch"):
            raise CliError(f"session {source} has no history yet to fork from (it is still starting)")
        at = sessions.full_commit(sessionops.SessionApi(kube, source), at_commit) if at_commit else None
        args = argparse.Namespace(
            env=environment, at=at, idle_timeout=None, max_lifetime=None, execution_timeout=None
        )
        kube.create_session(sessions.session_manifest(name, sessions.fork_spec(args, found)))
        return self.wait_ready(kube, name, wait_seconds)

    # -- a live session's operations -----------------------------------------------------------------

    def live(self, namespace: str | None, name: str) -> sessionops.SessionApi:
        kube = self.client(namespace)
        sessionops.require_live(kube, name)
        return sessionops.SessionApi(kube, name)

    def edit(
        self,
        namespace: str | None,
        name: str,
        edit_mode: str,
        cell_id: str | None,
        new_source: str | None,
        cell_type: str | None,
        after: str | None,
        at_top: bool,
        expect_head: str | None,
    ) -> dict[str, Any]:
        api = self.live(namespace, name)
        if edit_mode != "insert" and not cell_id:
            raise UsageError(f"{edit_mode} needs cell_id: the id of the cell to {edit_mode}")
        if edit_mode == "insert" and after and at_top:
            raise UsageError("give after or at_top, not both")
        if edit_mode in ("insert", "replace") and new_source is None:
            raise UsageError(f"{edit_mode} needs new_source")
        if edit_mode == "insert" and not after and not at_top:
            return sessionops.append_cell(api, new_source or "", cell_type or "code", cell_id, expect_head)
        body: dict[str, Any] = {"action": edit_mode}
        if cell_id:
            body["cellId"] = cell_id
        if edit_mode != "delete":
            body["source"] = new_source
            if cell_type:
                body["cellType"] = cell_type
        if after:
            body["after"] = after
        if expect_head:
            body["expectHead"] = expect_head.lower()
        return api.operate("edit", body)

    def execute(
        self,
        namespace: str | None,
        name: str,
        cell_ids: list[str] | None,
        all_cells: bool,
        start: str | None,
        code: str | None,
        timeout_seconds: int | None,
    ) -> dict[str, Any]:
        """Executes the cells (or appends `code` as a cell and executes it); the OperationResult."""
        chosen = [bool(cell_ids), all_cells, start is not None, code is not None]
        if sum(chosen) != 1:
            raise UsageError("name the cells to execute: exactly one of cell_ids, all, start or code")
        if timeout_seconds is not None and timeout_seconds < 1:
            raise UsageError("timeout must be at least 1 second")
        # No read of the session before the request (one round trip less per cell): a refusal is
        # explained afterwards by the session's state (missing, starting, ended) when that is the cause.
        kube = self.client(namespace)
        api = sessionops.SessionApi(kube, name)
        try:
            return self._execute(api, cell_ids, start, code, timeout_seconds)
        except CliError:
            sessionops.require_live(kube, name)
            raise

    def _execute(
        self,
        api: sessionops.SessionApi,
        cell_ids: list[str] | None,
        start: str | None,
        code: str | None,
        timeout_seconds: int | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if cell_ids:
            body["cellIds"] = list(cell_ids)
        elif start is not None:
            body["start"] = start
        if timeout_seconds is not None:
            body["timeoutSeconds"] = timeout_seconds
        if code is not None:
            inserted = sessionops.append_cell(api, code, "code", None, None)
            body["cellIds"] = [inserted["cellId"]]
            body["expectHead"] = inserted["head"]
        return self.execute_body(api, body)

    def execute_body(self, api: sessionops.SessionApi, body: dict[str, Any]) -> dict[str, Any]:
        started = False
        result: dict[str, Any] | None = None
        try:
            # Read to the stream's end (it ends right after its result), so its connection can be
            # reused; one left half-read is closed (UserApi.lines).
            for event in api.execute(body):
                kind = event.get("type")
                started = started or kind == "cellStarted"
                if kind == "result" and result is None:
                    result = dict(event.get("result") or {})
                if kind == "error":
                    raise CliError(
                        f"the execution in session {api.name} failed "
                        f"({event.get('reason') or event.get('code')}): {event.get('message')}"
                    )
            if result is not None:
                return result
        except CliError as exc:
            if result is not None:  # it broke after the result: the execution is done and committed
                return result
            if not started:
                raise
            raise CliError(
                f"{exc.message}; the execution goes on in session {api.name}: notebook_read shows its "
                "outputs once it is done"
            ) from None
        raise CliError(
            f"the stream ended before the execution's result; it goes on in session {api.name}: "
            "notebook_read shows its outputs once it is done"
        )

    def variables(self, namespace: str | None, name: str) -> dict[str, Any]:
        state = self.live(namespace, name).read_json("variables")
        return state if isinstance(state, dict) else {}

    def kernel(self, namespace: str | None, name: str, operation: str) -> dict[str, Any]:
        return self.live(namespace, name).operate(operation, {})

    def history(self, namespace: str | None, name: str, limit: int) -> list[dict[str, Any]]:
        if limit < 1:
            raise UsageError("limit must be at least 1")
        kube = self.client(namespace)
        kube.find_session(name)
        entries = sessionops.SessionApi(kube, name).read_json("history", {"limit": str(limit)})
        return list(entries) if isinstance(entries, list) else []

    def session_notebook(self, namespace: str | None, name: str, ref: str | None) -> dict[str, Any]:
        kube = self.client(namespace)
        kube.find_session(name)
        query = {"ref": ref.lower()} if ref else None
        notebook = sessionops.SessionApi(kube, name).read_json("notebook", query)
        return notebook if isinstance(notebook, dict) else {}

    def session_artifact(self, namespace: str | None, name: str, path: str) -> bytes:
        """A file of the session's branch at its head (the whole outputs of truncated cells)."""
        kube = self.client(namespace)
        head = (kube.find_session(name).get("status") or {}).get("head")
        if not head:
            raise CliError(f"session {name} has no commit yet")
        return self.repository_file(kube, path, head, f"session {name}'s {path}")

    def repository_file(self, kube: ClusterClient, path: str, ref: str, what: str) -> bytes:
        try:
            data, _ = UserApi(kube).get(paths.file_path(kube.namespace, path), {"ref": ref})
        except UserApiError as exc:
            if exc.status == 404:
                raise CliError(
                    f"{what}: {path} at commit {ref[:12]} is not in namespace {kube.namespace}'s results "
                    "repository"
                ) from None
            if exc.status in (401, 403):
                raise CliError(f"reading {what} was refused: {exc.message}") from None
            raise
        return data

    # -- runs and sweeps -------------------------------------------------------------------------------

    def run_notebook(
        self,
        namespace: str | None,
        environment: str,
        cells: list[str] | None,
        notebook_path: str | None,
        parameters: dict[str, Any] | None,
        matrix: dict[str, list[Any]] | None,
        parallelism: int | None,
        name: str | None,
        cell_timeout_seconds: int | None,
        allow_errors: bool,
        wait_seconds: float,
    ) -> dict[str, Any]:
        """Creates a NotebookRun (a sweep with `matrix`) and waits until it ends; the run, and for a
        sweep its children, as the tools report them."""
        kube = self.client(namespace)
        if (cells is None) == (notebook_path is None):
            raise UsageError("give exactly one of cells (code cell sources) or notebook_path")
        source = Path(notebook_path).expanduser() if notebook_path else Path(NOTEBOOK_KEY)
        run_name = run.check_name(name) if name else run.generated_name(source)
        if notebook_path:
            key = run.config_map_key(source)
            text = run.notebook_payload(source, key)
        else:
            key, text = NOTEBOOK_KEY, _notebook_text(cells or [], bool(parameters or matrix))
        args = argparse.Namespace(
            env=environment,
            parameters=_assignments(parameters),
            matrix=[],
            parallelism=parallelism,
            timeout_cell=cell_timeout_seconds,
            timeout_run=None,
            retries=None,
            allow_errors=allow_errors,
        )
        spec = run.build_spec(args, run_name, key)
        if matrix:
            spec["matrix"] = matrix
            _validated_run(spec)
        self._require_environment(kube, environment)
        run.create(kube, run_name, key, text, spec)
        deadline = time.monotonic() + wait_seconds
        found = _last(kube.watch_run(run_name, deadline))
        summary = run_summary(found)
        if run_state(found) not in TERMINAL_RUN_STATES:
            summary["note"] = (
                f"still {run_state(found)} after {wait_seconds:.0f}s; it keeps running: notebook_read with "
                f"run={run_name} reads its result once it has one"
            )
        children = (found.get("status") or {}).get("sweep", {}).get("children") or []
        if children:
            summary["children"] = [run_summary(kube.find_run(child)) for child in children]
        return summary

    def run_notebook_text(self, namespace: str | None, name: str) -> tuple[dict[str, Any], bytes]:
        kube = self.client(namespace)
        found = kube.find_run(name)
        result = fetch.result_of(found)
        return result, self.repository_file(kube, result["path"], result["commit"], f"{name}'s result")

    @staticmethod
    def _require_environment(kube: ClusterClient, environment: str) -> None:
        if not kube.environment_exists(environment):
            raise CliError(
                f"NotebookEnvironment {environment!r} not found in namespace {kube.namespace}: "
                f"`kubectl get nbenv -n {kube.namespace}` lists them"
            )


def run_summary(found: dict[str, Any]) -> dict[str, Any]:
    """A run as an agent reads it: state, reason, parameters, recorded values, result and each cell's
    summary (a sweep: its counts and column names; its children, summarised alike, carry the rest)."""
    status = found.get("status") or {}
    summary: dict[str, Any] = {
        "name": found["metadata"]["name"],
        "state": run_state(found),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "parameters": (found.get("spec") or {}).get("parameters") or {},
    }
    if status.get("duration"):
        summary["duration"] = status["duration"]
    if status.get("values"):
        summary["values"] = status["values"]
    if status.get("valueNotes"):
        summary["valueNotes"] = status["valueNotes"]
    if status.get("result"):
        summary["result"] = status["result"]
    if status.get("sweep"):
        summary["sweep"] = {k: v for k, v in status["sweep"].items() if k not in ("children", "rows")}
    cells = [
        {k: cell.get(k) for k in ("id", "state", "executionCount", "summary") if cell.get(k) is not None}
        for cell in status.get("cells") or []
    ]
    if cells:
        summary["cells"] = cells
    return summary


def _last(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The last object a watch yielded (it yields the object first, then after every change)."""
    last: dict[str, Any] = {}
    for obj in objects:
        last = obj
    return last


def _assignments(parameters: dict[str, Any] | None) -> list[str]:
    """Parameters as the CLI's NAME=VALUE (JSON is YAML 1.2: the CLI's parser reads each value back)."""
    return [f"{key}={json.dumps(value)}" for key, value in (parameters or {}).items()]


def _notebook_text(cells: list[str], parameterized: bool) -> str:
    """Code cells as a notebook; with parameters the first is tagged `parameters` (its values are the
    defaults: the injected cell follows it, as papermill does)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    if parameterized and nb.cells:
        nb.cells[0].metadata["tags"] = ["parameters"]
    return str(nbformat.writes(nb))


def _validated_run(spec: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from nbkube.api import NotebookRunSpec

    try:
        NotebookRunSpec.model_validate(spec)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"invalid run: {where}: {str(first['msg']).removeprefix('Value error, ')}") from None
