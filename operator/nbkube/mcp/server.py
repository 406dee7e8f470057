"""The MCP server of `nbkube mcp`: the tools and resources, over the SDK's MCPServer.

Each tool runs its action (nbkube.mcp.actions, the CLI's synchronous client) in a worker thread; a
CliError (a missing session or environment, a refusal in the API server's words, a conflict, a bad
argument) becomes a tool error with its message, and a cell that did not succeed makes the execution's
answer a tool error that carries the outputs and the traceback. Arguments of the wrong type are the
SDK's tool errors. Nothing reaches stdout but the protocol.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio.to_thread
import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from pydantic import Field

from nbkube import __version__
from nbkube.cli.errors import CliError
from nbkube.cli.sessionops import variables_table
from nbkube.mcp import content
from nbkube.mcp.actions import DEFAULT_READY_SECONDS, DEFAULT_RUN_SECONDS, Nbkube

T = TypeVar("T")
log = logging.getLogger("nbkube.mcp")

INSTRUCTIONS = """\
nbkube runs Jupyter notebooks on Kubernetes. A notebook session (session_create) is a live kernel of a
NotebookEnvironment whose notebook you edit by cell id (cell_edit) and execute (execute); every change
is a commit on the session's branch (session_history), and session_fork starts a new session from any
commit. kernel_state lists the kernel's variables without running a cell. run_notebook runs a whole
notebook as a NotebookRun, with a matrix a parallel parameter sweep, and waits for it. Everything acts
with the user's kubeconfig: a refusal names the missing right. Namespace: the server's default unless
a tool's namespace is given."""

Namespace = Annotated[
    str | None, Field(description="Kubernetes namespace (default: the server's, from -n or the context)")
]
SessionName = Annotated[str, Field(description="the NotebookSession's name")]
Cells = Annotated[
    list[str] | None,
    Field(
        description="code cell sources, in order (instead of notebook_path); with parameters or a matrix "
        "the first cell holds their defaults (it is tagged 'parameters': the given values follow it)"
    ),
]
NotebookPath = Annotated[
    str | None, Field(description="a local .ipynb on the machine running nbkube mcp (instead of cells)")
]
Parameters = Annotated[
    dict[str, Any] | None,
    Field(description="values injected after the cell tagged 'parameters' (JSON scalars, lists, maps)"),
]


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a worker thread; a CliError becomes a ToolError with its message."""
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))
    except CliError as exc:
        raise ToolError(exc.message) from None


def _ready(session: dict[str, Any]) -> list[types.ContentBlock]:
    meta, status = session["metadata"], session.get("status") or {}
    summary = {
        "name": meta["name"],
        "namespace": meta.get("namespace"),
        "state": status.get("state"),
        "kernel": (status.get("kernel") or {}).get("state"),
        "branch": status.get("branch"),
        "head": status.get("head"),
        "notebook": content.notebook_uri(meta.get("namespace", ""), meta["name"]),
    }
    return [content.as_json(summary)]


def build_server(nbkube: Nbkube) -> MCPServer:
    server: MCPServer = MCPServer(
        name="nbkube", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    @server.tool()
    async def session_create(
        name: Annotated[str, Field(description="the new session's name (lower-case letters, digits, '-')")],
        environment: Annotated[str, Field(description="the NotebookEnvironment whose kernel it uses")],
        cells: Cells = None,
        notebook_path: NotebookPath = None,
        repo_path: Annotated[
            str | None,
            Field(description="an .ipynb of the namespace's results repository, e.g. NS/RUN/notebook.ipynb"),
        ] = None,
        from_run: Annotated[
            str | None, Field(description="start from this NotebookRun's executed notebook")
        ] = None,
        files: Annotated[
            list[str] | None,
            Field(
                description="local files or folders (on the machine running nbkube mcp) placed in the "
                "session's working directory, by their path relative to notebook_path's folder (or the "
                "server's current one), else by their name"
            ),
        ] = None,
        parameters: Parameters = None,
        idle_timeout_seconds: Annotated[
            int | None, Field(description="end the session after this long without an operation (30 min)")
        ] = None,
        wait_seconds: Annotated[
            float, Field(description="how long to wait for Ready")
        ] = DEFAULT_READY_SECONDS,
        namespace: Namespace = None,
    ) -> list[types.ContentBlock]:
        """Create a notebook session (a live kernel) and wait until it is Ready. It starts from an empty
        notebook, inline code cells, a local .ipynb, a notebook of the results repository or a run's
        executed notebook (at most one), with local files beside it. Returns its branch, head commit and
        notebook resource URI."""
        session = await _call(
            nbkube.create_session,
            namespace,
            name,
            environment,
            cells,
            notebook_path,
            repo_path,
            from_run,
            files,
            parameters,
            idle_timeout_seconds,
            wait_seconds,
        )
        return _ready(session)

    @server.tool()
    async def session_list(namespace: Namespace = None) -> list[types.ContentBlock]:
        """List the notebook sessions of the namespace: state, reason, kernel, operations, head."""
        rows = await _call(nbkube.list_sessions, namespace)
        return [content.as_json(rows)]

    @server.tool()
    async def session_delete(name: SessionName, namespace: Namespace = None) -> str:
        """Delete a session: its kernel goes, its history stays in the results repository."""
        return await _call(nbkube.delete_session, namespace, name)

    @server.tool()
    async def session_fork(
        session: Annotated[str, Field(description="the session forked from")],
        new_name: Annotated[str, Field(description="the new session's name")],
        at_commit: Annotated[
            str | None,
            Field(description="a commit of the session's history, or a prefix (default: its head)"),
        ] = None,
        environment: Annotated[str | None, Field(description="default: the forked session's")] = None,
        wait_seconds: float = DEFAULT_READY_SECONDS,
        namespace: Namespace = None,
    ) -> list[types.ContentBlock]:
        """Start a new session whose notebook (with outputs) is another session's at a commit, on a branch
        of its own. Its kernel is fresh: execute the cells again to get the variables back."""
        forked = await _call(
            nbkube.fork_session, namespace, session, new_name, at_commit, environment, wait_seconds
        )
        return _ready(forked)

    @server.tool()
    async def session_history(
        session: SessionName,
        limit: Annotated[int, Field(description="at most this many commits, newest first")] = 20,
        namespace: Namespace = None,
    ) -> list[types.ContentBlock]:
        """A session's history: one commit per edit or execution, newest first (commit, time, message)."""
        return [content.as_json(await _call(nbkube.history, namespace, session, limit))]

    @server.tool()
    async def cell_edit(
        session: SessionName,
        edit_mode: Annotated[
            Literal["insert", "replace", "delete"],
            Field(
                description="insert a new cell, replace a cell's source (a code cell's outputs are "
                "cleared), or delete a cell"
            ),
        ],
        cell_id: Annotated[
            str | None,
            Field(
                description="replace/delete: the cell's id; insert: the new cell's id (default: generated)"
            ),
        ] = None,
        new_source: Annotated[str | None, Field(description="insert/replace: the cell's source")] = None,
        cell_type: Annotated[
            Literal["code", "markdown", "raw"] | None,
            Field(description="insert: default code; replace: default unchanged"),
        ] = None,
        after: Annotated[
            str | None, Field(description="insert: after the cell with this id (default: at the end)")
        ] = None,
        at_top: Annotated[bool, Field(description="insert: before every other cell")] = False,
        expect_head: Annotated[
            str | None, Field(description="refuse unless the session's head is still this commit")
        ] = None,
        namespace: Namespace = None,
    ) -> list[types.ContentBlock]:
        """Edit the session's notebook by nbformat cell id (the NotebookEdit contract); each edit is one
        commit. Returns the cell's id and the new head."""
        result = await _call(
            nbkube.edit,
            namespace,
            session,
            edit_mode,
            cell_id,
            new_source,
            cell_type,
            after,
            at_top,
            expect_head,
        )
        return [
            content.text(
                f"{result.get('message') or edit_mode}; cell {result.get('cellId')}; head "
                f"{result.get('head')}"
            )
        ]

    @server.tool()
    async def execute(
        session: SessionName,
        cell_ids: Annotated[list[str] | None, Field(description="the code cells to execute")] = None,
        all: Annotated[bool, Field(description="execute every code cell, in order")] = False,
        start: Annotated[str | None, Field(description="every code cell from this one on")] = None,
        code: Annotated[
            str | None, Field(description="append a code cell with this source and execute it")
        ] = None,
        timeout: Annotated[
            int | None, Field(description="interrupt a cell running longer than this many seconds")
        ] = None,
        namespace: Namespace = None,
    ) -> types.CallToolResult:
        """Execute code cells in the session's live kernel, in notebook order, stopping at the first that
        fails. Returns each cell's outputs: text, images (image/png) as image content, errors with their
        traceback; a tool error when a cell did not succeed, saying what to do."""
        result = await _call(nbkube.execute, namespace, session, cell_ids, all, start, code, timeout)
        ns = namespace or nbkube.namespace
        blocks = content.execution_blocks(ns, session, result)
        return types.CallToolResult(content=blocks, is_error=bool(content.failed_cells(result)))

    @server.tool()
    async def kernel_state(session: SessionName, namespace: Namespace = None) -> list[types.ContentBlock]:
        """The kernel's user variables (name, type, size, value), read without running a cell."""
        state = await _call(nbkube.variables, namespace, session)
        return [content.text(variables_table(state) + "\n"), content.as_json(state)]

    @server.tool()
    async def kernel_interrupt(session: SessionName, namespace: Namespace = None) -> str:
        """Interrupt the execution running now in the session's kernel."""
        result = await _call(nbkube.kernel, namespace, session, "interrupt")
        return str(result.get("message") or "interrupted")

    @server.tool()
    async def kernel_restart(session: SessionName, namespace: Namespace = None) -> str:
        """Restart the session's kernel: its variables are lost, the notebook and outputs stay."""
        result = await _call(nbkube.kernel, namespace, session, "restart")
        return str(result.get("message") or "restarted")

    @server.tool()
    async def notebook_read(
        session: Annotated[str | None, Field(description="a session's notebook (or give run)")] = None,
        ref: Annotated[
            str | None, Field(description="a commit of the session's history (default: head)")
        ] = None,
        run: Annotated[str | None, Field(description="a NotebookRun's executed notebook")] = None,
        namespace: Namespace = None,
    ) -> list[types.ContentBlock]:
        """Read a notebook with its outputs: a session's (at its head or a commit), or a finished run's
        executed notebook. Cells with index, id, type and source, outputs as content, a link to the .ipynb."""
        ns = namespace or nbkube.namespace
        if (session is None) == (run is None):
            raise ToolError("give exactly one of session or run")
        if session is not None:
            notebook = await _call(nbkube.session_notebook, namespace, session, ref)
            at = f" at {ref}" if ref else ""
            return content.notebook_blocks(
                notebook, content.notebook_uri(ns, session), f"session {session}{at}"
            )
        assert run is not None
        result, data = await _call(nbkube.run_notebook_text, namespace, run)
        return content.notebook_blocks(
            _decoded(data),
            content.run_notebook_uri(ns, run),
            f"run {run}: {result['path']} at {result['commit'][:12]}",
        )

    @server.tool()
    async def run_notebook(
        environment: Annotated[str, Field(description="the NotebookEnvironment to run in")],
        cells: Cells = None,
        notebook_path: NotebookPath = None,
        parameters: Parameters = None,
        name: Annotated[str | None, Field(description="the NotebookRun's name (default: generated)")] = None,
        cell_timeout_seconds: Annotated[
            int | None, Field(description="interrupt a cell after this long")
        ] = None,
        allow_errors: Annotated[bool, Field(description="keep going after a failing cell")] = False,
        wait_seconds: Annotated[
            float, Field(description="how long to wait for the end")
        ] = DEFAULT_RUN_SECONDS,
        namespace: Namespace = None,
    ) -> types.CallToolResult:
        """Run a whole notebook as a NotebookRun (a fresh kernel, top to bottom) and wait until it ends.
        Returns its state, each cell's summary and its result (read it with notebook_read run=NAME)."""
        summary = await _call(
            nbkube.run_notebook,
            namespace,
            environment,
            cells,
            notebook_path,
            parameters,
            None,
            None,
            name,
            cell_timeout_seconds,
            allow_errors,
            wait_seconds,
        )
        return _run_result(summary)

    @server.tool()
    async def run_sweep(
        environment: Annotated[str, Field(description="the NotebookEnvironment to run in")],
        matrix: Annotated[
            dict[str, list[Any]], Field(description="parameter name -> values; one child run per combination")
        ],
        cells: Cells = None,
        notebook_path: NotebookPath = None,
        parameters: Parameters = None,
        parallelism: Annotated[int | None, Field(description="child runs at once (default 4)")] = None,
        name: Annotated[str | None, Field(description="the parent run's name (default: generated)")] = None,
        allow_errors: bool = False,
        wait_seconds: float = DEFAULT_RUN_SECONDS,
        namespace: Namespace = None,
    ) -> types.CallToolResult:
        """Run a parameter sweep: one NotebookRun per combination of the matrix, in parallel, and wait
        until all end. Returns each child's parameters, state, cell summaries and result."""
        summary = await _call(
            nbkube.run_notebook,
            namespace,
            environment,
            cells,
            notebook_path,
            parameters,
            matrix,
            parallelism,
            name,
            None,
            allow_errors,
            wait_seconds,
        )
        return _run_result(summary)

    @server.resource(
        "nbkube://{namespace}/sessions/{name}/notebook",
        name="session notebook",
        description="a session's notebook (.ipynb JSON) at its head",
        mime_type=content.IPYNB_MIME,
    )
    async def session_notebook_resource(namespace: str, name: str) -> str:
        notebook = await _resource(nbkube.session_notebook, namespace, name, None)
        return json.dumps(notebook)

    @server.resource(
        "nbkube://{namespace}/sessions/{name}/artifacts/{+path}",
        name="session artifact",
        description="a file of a session's branch at its head (the whole outputs of truncated cells)",
    )
    async def session_artifact_resource(namespace: str, name: str, path: str) -> str:
        data = await _resource(nbkube.session_artifact, namespace, name, path)
        return data.decode(errors="replace")

    @server.resource(
        "nbkube://{namespace}/runs/{name}/notebook",
        name="run notebook",
        description="a finished NotebookRun's executed notebook (.ipynb JSON)",
        mime_type=content.IPYNB_MIME,
    )
    async def run_notebook_resource(namespace: str, name: str) -> str:
        _, data = await _resource(nbkube.run_notebook_text, namespace, name)
        return data.decode()

    return server


async def _resource(fn: Callable[..., T], *args: Any) -> T:
    try:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))
    except CliError as exc:
        if "not found" in exc.message or "is not in" in exc.message:
            raise ResourceNotFoundError(exc.message) from None
        raise ResourceError(exc.message) from None


def _decoded(data: bytes) -> dict[str, Any]:
    try:
        notebook = json.loads(data)
    except ValueError:
        raise ToolError(f"the stored notebook is not JSON: {data[:100]!r}") from None
    return notebook if isinstance(notebook, dict) else {}


def _run_result(summary: dict[str, Any]) -> types.CallToolResult:
    """A run's summary; a tool error when it (or a child) did not succeed or did not end in time."""
    states = [summary["state"], *(c["state"] for c in summary.get("children") or [])]
    failed = any(state != "Succeeded" for state in states)
    return types.CallToolResult(content=[content.as_json(summary)], is_error=failed)
