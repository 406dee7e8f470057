"""`nbkube session exec|edit|state|log|show|interrupt|restart`: operations on a live NotebookSession.

They go through the user API on the Kubernetes API server (`.../notebooksessions/<name>/<sub>`), with
the user's own kubeconfig: reads (notebook, history, variables) need `get` on their subresource,
operations (edit, execute, interrupt, restart) `create` on theirs. An execution's outputs stream to
the terminal as the kernel produces them (NDJSON events, then the result).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from nbkube.api.session import SessionState
from nbkube.api.states import CellState
from nbkube.cli.errors import EXIT_FAILED, EXIT_OK, CliError, UsageError
from nbkube.cli.fetch import write_atomically
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options, session_state
from nbkube.cli.logs import CellPrinter, format_output
from nbkube.cli.run import check_name
from nbkube.cli.tables import format_table
from nbkube.cli.userapi import UserApi, UserApiError
from nbkube.userapi import paths

REPR_WIDTH = 60


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    execute = actions.add_parser(
        "exec",
        help="execute cells in the session's kernel, outputs streaming",
        description="Executes code cells in the session's live kernel, in notebook order, stopping at the "
        "first that fails; outputs print as they arrive. Exit code 1 when a cell failed.",
    )
    execute.add_argument("name", metavar="NAME")
    execute.add_argument("cell_ids", nargs="*", metavar="CELL_ID", help="the cells to execute")
    which = execute.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every code cell")
    which.add_argument("--from", dest="start", metavar="ID", help="every code cell from this one on")
    which.add_argument(
        "--code", metavar="SOURCE", help="append a code cell with SOURCE ('-': stdin) and execute it"
    )
    execute.add_argument("--timeout", type=int, metavar="S", help="interrupt a cell running longer than S")
    _add_expect_head(execute)
    add_cluster_options(execute)
    execute.set_defaults(handler=cmd_exec)

    edit = actions.add_parser(
        "edit",
        help="insert, replace or delete a cell of the session's notebook by id",
        description="Edits the session's notebook by nbformat 4.5 cell id; each edit is one commit.",
    )
    edit.add_argument("name", metavar="NAME")
    edits = edit.add_subparsers(dest="edit_action", metavar="ACTION", required=True)
    insert = edits.add_parser("insert", help="insert a cell (default: at the end)")
    where = insert.add_mutually_exclusive_group()
    where.add_argument("--after", metavar="ID", help="after the cell with this id")
    where.add_argument("--top", action="store_true", help="before every other cell")
    insert.add_argument("--id", dest="cell_id", metavar="ID", help="the new cell's id (default: generated)")
    _add_type(insert, "code")
    _add_source(insert)
    replace = edits.add_parser("replace", help="replace a cell's source (a code cell's outputs are cleared)")
    replace.add_argument("cell_id", metavar="ID")
    _add_type(replace, None)
    _add_source(replace)
    delete = edits.add_parser("delete", help="delete a cell")
    delete.add_argument("cell_id", metavar="ID")
    for parser in (insert, replace, delete):
        _add_expect_head(parser)
        add_cluster_options(parser)
        parser.set_defaults(handler=cmd_edit)

    state = actions.add_parser("state", help="the kernel's user variables (read without running a cell)")
    state.add_argument("name", metavar="NAME")
    add_cluster_options(state)
    state.set_defaults(handler=cmd_state)

    log = actions.add_parser("log", help="the session's history: one commit per change, newest first")
    log.add_argument("name", metavar="NAME")
    log.add_argument("--limit", type=int, default=100, metavar="N", help="at most N commits (default 100)")
    add_cluster_options(log)
    log.set_defaults(handler=cmd_log)

    show = actions.add_parser(
        "show",
        help="the session's notebook with its outputs, now or at an earlier commit",
        description="Prints the session's notebook (cells and outputs), or writes the .ipynb with -o.",
    )
    show.add_argument("name", metavar="NAME")
    show.add_argument("--ref", metavar="SHA", help="a commit of the session's branch (default: its head)")
    show.add_argument("-o", "--output", metavar="FILE", help="write the .ipynb to FILE ('-': stdout)")
    add_cluster_options(show)
    show.set_defaults(handler=cmd_show)

    interrupt = actions.add_parser("interrupt", help="interrupt the execution running now")
    interrupt.add_argument("name", metavar="NAME")
    add_cluster_options(interrupt)
    interrupt.set_defaults(handler=cmd_interrupt)

    restart = actions.add_parser(
        "restart", help="restart the session's kernel (its variables are lost; outputs stay)"
    )
    restart.add_argument("name", metavar="NAME")
    add_cluster_options(restart)
    restart.set_defaults(handler=cmd_restart)


def _add_expect_head(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expect-head",
        metavar="SHA",
        help="refuse (exit 1) unless the session's head is still this commit (a prefix will do)",
    )


def _add_type(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--type",
        dest="cell_type",
        choices=["code", "markdown", "raw"],
        default=default,
        help=f"the cell's type (default: {default or 'unchanged'})",
    )


def _add_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="the cell's source ('-': read it from stdin)")


def read_source(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


# -- the user API of one session -------------------------------------------------------------------


class SessionApi:
    """A session's routes of the user API; refusals become one-line CliErrors with the server's words."""

    def __init__(self, kube: ClusterClient, name: str) -> None:
        self.kube = kube
        self.name = check_name(name, "session")  # a forged name never reaches a request path
        self.api = UserApi(kube)

    def path(self, sub: str) -> str:
        return paths.session_path(self.kube.namespace, self.name, sub)

    def read(self, sub: str, query: dict[str, str] | None = None) -> bytes:
        try:
            data, _ = self.api.get(self.path(sub), query)
        except UserApiError as exc:
            raise self.refusal(exc, f"reading {self.name}'s {sub}") from None
        return data

    def read_json(self, sub: str, query: dict[str, str] | None = None) -> Any:
        return _decode(self.read(sub, query), sub)

    def operate(self, sub: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = _decode(self.api.post(self.path(sub), body), sub)
        except UserApiError as exc:
            raise self.refusal(exc, f"{sub} in session {self.name}") from None
        if not isinstance(answer, dict):
            raise CliError(f"unexpected answer to {sub} in session {self.name}: {answer!r:.200}")
        return answer

    def execute(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            for line in self.api.lines(self.path(paths.SESSION_EXEC), post=body):
                if line.strip():
                    event = _decode(line, "execute")
                    if not isinstance(event, dict):
                        raise CliError(f"unexpected event in the execution's stream: {line[:200]!r}")
                    yield event
        except UserApiError as exc:
            raise self.refusal(exc, f"execute in session {self.name}") from None

    def refusal(self, exc: UserApiError, what: str) -> CliError:
        if exc.status in (401, 403):
            return CliError(f"{what} was refused: {exc.message}")
        if exc.status in (400, 404, 409):
            return CliError(f"{what}: {exc.message}")
        return exc

    def position_at_end(self) -> tuple[str, str | None]:
        """(the head, the id of its last cell or None): where an appended cell goes, and the head it
        expects (so a cell another writer appended meanwhile is not jumped over)."""
        history = self.read_json("history", {"limit": "1"})
        if not isinstance(history, list) or not history:
            raise CliError(f"session {self.name} has no history yet")
        head = str(history[0]["commit"])
        notebook = self.read_json("notebook", {"ref": head})
        cells = (notebook.get("cells") or []) if isinstance(notebook, dict) else []
        return head, (str(cells[-1]["id"]) if cells else None)


def _decode(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise CliError(f"unexpected answer from the operator ({what}): {raw[:200]!r}") from None


def require_live(kube: ClusterClient, name: str) -> dict[str, Any]:
    """The session, when it is Ready; else a CliError saying why (missing, starting, ended)."""
    session = kube.find_session(name)
    status = session.get("status") or {}
    state = session_state(session)
    why = ": ".join(part for part in (status.get("reason"), status.get("message")) if part)
    if state == SessionState.ENDED:
        raise CliError(
            f"session {name} has ended ({why or 'Ended'}); its history stays: "
            f"`nbkube session log {name}`, `nbkube session fork {name} NEW`"
        )
    if state != SessionState.READY:
        raise CliError(
            f"session {name} is not Ready yet ({why or state}); `kubectl wait --for=condition=Ready "
            f"nbsess/{name}` waits for it"
        )
    return session


# -- exec ------------------------------------------------------------------------------------------


class ExecPrinter(CellPrinter):
    """Turns an execution's events into terminal text: a header per cell, its outputs as they come."""

    def __init__(self, out: TextIO, color: bool, session: str) -> None:
        super().__init__(out, color)
        self.session = session
        self.current: str | None = None
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        cell_id = event.get("cellId")
        if kind == "cellStarted":
            self.rule(f"cell {cell_id}")
            self.current = cell_id
        elif kind == "output":
            if cell_id != self.current:
                self.rule(f"cell {cell_id}")
                self.current = cell_id
            self.write(format_output(event.get("output") or {}, self.color))
        elif kind == "cellFinished":
            if event.get("state") not in (None, CellState.SUCCEEDED):
                self.rule(f"cell {cell_id}: {event.get('state')}")
        elif kind == "streamTruncated":
            self.rule(f"more outputs than the stream carries; `nbkube session show {self.session}` has them")
        elif kind == "result":
            self.result = event.get("result") or {}
        elif kind == "error":
            self.error = event
        self.out.flush()

    def finish(self, err: TextIO) -> int:
        """The summary and the exit code: 0 when every cell succeeded."""
        if self.error is not None:
            reason = self.error.get("reason") or self.error.get("code")
            raise CliError(
                f"the execution in session {self.session} failed ({reason}): {self.error.get('message')}"
            )
        if self.result is None:
            raise CliError(
                f"the stream ended before the execution's result; it goes on in session {self.session} "
                f"(`nbkube session show {self.session}` shows the notebook once it is done)"
            )
        if not self.at_line_start:
            self.write("\n")
        self.out.flush()
        result = self.result
        head = (result.get("head") or "")[:12] or "-"
        summary = f"{result.get('message') or 'executed'}; head {head}"
        cells = result.get("cells") or []
        failed = [c for c in cells if c.get("state") != CellState.SUCCEEDED]
        truncated = [c["id"] for c in cells if c.get("truncated")]
        stream = err if failed else self.out
        print(summary, file=stream)
        if truncated and result.get("artifact"):
            print(
                f"outputs of cell(s) {', '.join(truncated)} were cut; the whole outputs are "
                f"{result['artifact']} at {head} (nbkube clone)",
                file=stream,
            )
        for cell in failed:
            print(f"  cell {cell.get('id')} {cell.get('state')}{_error_of(cell)}", file=err)
        stream.flush()
        return EXIT_FAILED if failed else EXIT_OK


def _error_of(cell: dict[str, Any]) -> str:
    for output in cell.get("outputs") or []:
        if output.get("output_type") == "error":
            return f": {output.get('ename')}: {output.get('evalue')}"
    return ""


def exec_body(args: argparse.Namespace) -> dict[str, Any]:
    """The ExecuteRequest of `session exec` (without --code's cell, added once it is inserted)."""
    chosen = [bool(args.cell_ids), args.all, args.start is not None, args.code is not None]
    if sum(chosen) != 1:
        raise UsageError("name the cells to execute: CELL_ID ..., --all, --from ID or --code SOURCE")
    body: dict[str, Any] = {}
    if args.cell_ids:
        body["cellIds"] = list(args.cell_ids)
    elif args.start is not None:
        body["start"] = args.start
    if args.timeout is not None:
        if args.timeout < 1:
            raise UsageError("--timeout must be at least 1 second")
        body["timeoutSeconds"] = args.timeout
    if args.expect_head:
        body["expectHead"] = args.expect_head.lower()
    return body


def cmd_exec(args: argparse.Namespace) -> int:
    body = exec_body(args)
    source = read_source(args.code) if args.code is not None else None
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        require_live(kube, args.name)
        api = SessionApi(kube, args.name)
        if source is not None:
            inserted = append_cell(api, source, "code", None, body.pop("expectHead", None))
            body["cellIds"] = [inserted["cellId"]]
            body["expectHead"] = inserted["head"]
        printer = ExecPrinter(sys.stdout, sys.stdout.isatty(), args.name)
        try:
            for event in api.execute(body):
                printer.handle(event)
        except CliError as exc:
            if printer.result is not None or printer.error is not None or printer.current is None:
                raise
            # The stream broke mid-execution (the API server ends a request after its request timeout,
            # 60 s by default): the execution goes on and is committed.
            raise CliError(
                f"{exc.message}; the execution goes on in session {args.name} "
                f"(`nbkube session show {args.name}` shows its outputs once it is done)"
            ) from None
        except KeyboardInterrupt:
            print(
                f"\nstopped following; the execution goes on in session {args.name} "
                f"(`nbkube session interrupt -n {kube.namespace} {args.name}` stops it)",
                file=sys.stderr,
            )
            return 130
        return printer.finish(sys.stderr)
    finally:
        kube.close()


# -- edit ------------------------------------------------------------------------------------------


def append_cell(
    api: SessionApi, source: str, cell_type: str, cell_id: str | None, expect_head: str | None
) -> dict[str, Any]:
    """Inserts a cell after the last one (at the top of an empty notebook); the edit's result."""
    head, last = api.position_at_end()
    body: dict[str, Any] = {"action": "insert", "source": source, "cellType": cell_type}
    body["expectHead"] = expect_head or head
    if last is not None:
        body["after"] = last
    if cell_id:
        body["cellId"] = cell_id
    return api.operate("edit", body)


def edit_body(args: argparse.Namespace) -> dict[str, Any]:
    """The EditRequest of `session edit ACTION` (insert at the end is completed by append_cell)."""
    body: dict[str, Any] = {"action": args.edit_action}
    if args.edit_action != "insert":
        body["cellId"] = args.cell_id
    elif args.cell_id:
        body["cellId"] = args.cell_id
    if args.edit_action in ("insert", "replace"):
        body["source"] = read_source(args.source)
        if args.cell_type:
            body["cellType"] = args.cell_type
    if args.edit_action == "insert" and args.after:
        body["after"] = args.after
    if args.expect_head:
        body["expectHead"] = args.expect_head.lower()
    return body


def cmd_edit(args: argparse.Namespace) -> int:
    body = edit_body(args)
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        require_live(kube, args.name)
        api = SessionApi(kube, args.name)
        if args.edit_action == "insert" and not args.after and not args.top:
            result = append_cell(
                api, body["source"], body["cellType"], body.get("cellId"), body.get("expectHead")
            )
        else:
            result = api.operate("edit", body)
    finally:
        kube.close()
    print(f"{result.get('message') or args.edit_action}; head {(result.get('head') or '')[:12] or '-'}")
    return EXIT_OK


# -- state, log, show ------------------------------------------------------------------------------


def variables_table(state: dict[str, Any]) -> str:
    kernel = state.get("kernelState") or "-"
    count = state.get("executionCount")
    lines = [f"kernel {kernel}, execution count {count if count is not None else '-'}"]
    variables = state.get("variables") or []
    if not variables:
        return "\n".join([*lines, "no user variables"])
    rows = [["NAME", "TYPE", "SIZE", "VALUE"]]
    for var in variables:
        size = var.get("shape") or (str(var["length"]) if var.get("length") is not None else "-")
        text = " ".join(str(var.get("repr") or "").split())
        rows.append(
            [
                str(var.get("name")),
                str(var.get("type")),
                size,
                text[:REPR_WIDTH] + ("…" if len(text) > REPR_WIDTH else ""),
            ]
        )
    lines.append(format_table(rows))
    if state.get("truncated"):
        lines.append("(more variables than listed)")
    return "\n".join(lines)


def cmd_state(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        require_live(kube, args.name)
        state = SessionApi(kube, args.name).read_json("variables")
    finally:
        kube.close()
    print(variables_table(state if isinstance(state, dict) else {}))
    return EXIT_OK


def history_lines(entries: list[dict[str, Any]]) -> str:
    lines = []
    for entry in entries:
        first = (str(entry.get("message") or "").splitlines() or [""])[0]
        lines.append(f"{str(entry.get('commit'))[:12]}  {entry.get('time') or '-'}  {first}")
    return "\n".join(lines)


def cmd_log(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        session = kube.find_session(args.name)
        entries = SessionApi(kube, args.name).read_json("history", {"limit": str(args.limit)})
    finally:
        kube.close()
    branch = (session.get("status") or {}).get("branch")
    if isinstance(entries, list) and entries:
        print(history_lines(entries))
    print(f"(branch {branch} of namespace {kube.namespace}'s results repository)", file=sys.stderr)
    return EXIT_OK


def render_notebook(notebook: dict[str, Any], color: bool) -> str:
    """A notebook as terminal text: each cell's header (index, id, type, execution count), its source,
    and a code cell's outputs."""
    parts: list[str] = []
    for index, cell in enumerate(notebook.get("cells") or []):
        kind = cell.get("cell_type", "code")
        count = cell.get("execution_count")
        label = f"[{count}]" if kind == "code" and count is not None else ""
        parts.append(f"── {index} {cell.get('id', '?')} {kind} {label}".rstrip() + " ──\n")
        source = _text(cell.get("source", ""))
        if source:
            parts.append(source.rstrip("\n") + "\n")
        outputs = cell.get("outputs") or []
        if outputs:
            parts.append("┄┄ output ┄┄\n")
            text = "".join(format_output(output, color) for output in outputs)
            parts.append(text if text.endswith("\n") else text + "\n")
    return "".join(parts)


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def cmd_show(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        kube.find_session(args.name)
        query = {"ref": args.ref.lower()} if args.ref else None
        data = SessionApi(kube, args.name).read("notebook", query)
    finally:
        kube.close()
    at = f" at {args.ref}" if args.ref else ""
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return EXIT_OK
    if args.output:
        target = Path(args.output)
        write_atomically(target, data)
        print(f"wrote {target} ({len(data)} bytes): session {args.name}'s notebook{at}")
        return EXIT_OK
    notebook = _decode(data, "notebook")
    sys.stdout.write(render_notebook(notebook if isinstance(notebook, dict) else {}, sys.stdout.isatty()))
    return EXIT_OK


# -- kernel ----------------------------------------------------------------------------------------


def cmd_interrupt(args: argparse.Namespace) -> int:
    return _kernel_operation(args, "interrupt")


def cmd_restart(args: argparse.Namespace) -> int:
    return _kernel_operation(args, "restart")


def _kernel_operation(args: argparse.Namespace, sub: str) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        require_live(kube, args.name)
        result = SessionApi(kube, args.name).operate(sub, {})
    finally:
        kube.close()
    print(f"{args.name}: {result.get('message') or sub}")
    return EXIT_OK
