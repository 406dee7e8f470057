"""`nbkube session create|list|describe|fork|delete`: NotebookSessions as objects, and the `session` command.

A session is a live kernel of an environment driven cell by cell, its notebook on its own branch of
the namespace's results repository. These commands create, list, fork and delete the NotebookSession
objects (with the user's kubeconfig, as kubectl would); the operations on a live session (exec, edit,
state, log, show, interrupt, restart) go through the user API and live in nbkube.cli.sessionops.

`create --from-file NB.ipynb` uploads the notebook (outputs stripped) and `--file` inputs as a
ConfigMap named after the session, which then gets an ownerReference to it, as `nbkube run` does.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from nbkube import API_VERSION
from nbkube.api.session import SessionState
from nbkube.cli import sessionops
from nbkube.cli.errors import EXIT_FAILED, EXIT_OK, CliError, UsageError, invalid_spec
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options, session_state
from nbkube.cli.run import (
    CREATED_BY_LABEL,
    check_name,
    config_map_key,
    create_owning,
    notebook_payload,
    parse_parameters,
)
from nbkube.cli.runs import age
from nbkube.cli.tables import describe_lines, format_table, notebook_origin
from nbkube.cli.uploads import Upload, binary_data, check_size, collect, files_spec

DEFAULT_WAIT_SECONDS = 300
HISTORY_SEARCHED = 1000  # the user API's most commits of one history read
SESSION_TOO_BIG_HINT = (
    "put it in the results repository and create the session with --repo-path (spec.notebook.repoPath)"
)
_DURATION = re.compile(r"^(?:\d+[smhd])+$|^\d+$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    session = subparsers.add_parser(
        "session",
        help="notebook sessions: a live kernel driven cell by cell, every change a commit",
        description="A NotebookSession holds a kernel of an environment for a person or an agent: cells "
        "are edited by id and executed in the live kernel, every change is one commit on the session's "
        "branch of the namespace's results repository.",
    )
    actions = session.add_subparsers(dest="session_command", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="create a session and wait until it is Ready",
        description="Creates a NotebookSession of an environment, starting from an empty notebook, a "
        "local .ipynb (uploaded as a ConfigMap the session owns), inline cells, a notebook of the results "
        "repository or a run's result; waits until its kernel is Ready and prints its branch and head.",
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--env", required=True, help="the NotebookEnvironment (in the session's namespace)")
    start = create.add_mutually_exclusive_group()
    start.add_argument("--from-file", type=Path, metavar="NB.ipynb", help="a local notebook to start from")
    start.add_argument(
        "--cell",
        dest="cells",
        action="append",
        metavar="SOURCE",
        help="an inline code cell to start with (repeatable, in order)",
    )
    start.add_argument("--repo-path", metavar="PATH", help="an .ipynb of the namespace's results repository")
    start.add_argument("--from-run", metavar="RUN", help="start from a NotebookRun's executed notebook")
    create.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a parameter injected after the cell tagged 'parameters' (a YAML 1.2 scalar); repeatable",
    )
    create.add_argument(
        "--file",
        dest="files",
        action="append",
        default=[],
        type=Path,
        metavar="PATH",
        help="a file or folder placed in the session's working directory (by its path relative to the "
        "notebook's folder, or the current one, else by its name); repeatable",
    )
    _add_lifetime_options(create)
    _add_wait_options(create)
    add_cluster_options(create)
    create.set_defaults(handler=cmd_create)

    listing = actions.add_parser("list", help="a table of sessions")
    add_cluster_options(listing)
    listing.set_defaults(handler=cmd_list)

    describe = actions.add_parser("describe", help="a session's state, kernel, branch and per-cell table")
    describe.add_argument("name", metavar="NAME")
    add_cluster_options(describe)
    describe.set_defaults(handler=cmd_describe)

    fork = actions.add_parser(
        "fork",
        help="start a new session from a commit of another one",
        description="Creates session NEW whose notebook (with its outputs) is SESSION's at a commit "
        "(default: its head), on a branch of its own that starts at that commit. The new session has a "
        "fresh kernel: run its cells again to get the variables back.",
    )
    fork.add_argument("source", metavar="SESSION")
    fork.add_argument("name", metavar="NEW")
    fork.add_argument("--at", metavar="SHA", help="a commit of SESSION's branch (`nbkube session log`)")
    fork.add_argument("--env", help="the NotebookEnvironment (default: SESSION's)")
    _add_lifetime_options(fork)
    _add_wait_options(fork)
    add_cluster_options(fork)
    fork.set_defaults(handler=cmd_fork)

    delete = actions.add_parser(
        "delete", help="delete a session: its kernel goes, its history stays in the repository"
    )
    delete.add_argument("name", metavar="NAME")
    add_cluster_options(delete)
    delete.set_defaults(handler=cmd_delete)

    sessionops.register(actions)


def _add_lifetime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--idle-timeout",
        metavar="DURATION",
        help="end the session after this long without an operation (90s, 30m, 2h, 1d; default 30m)",
    )
    parser.add_argument(
        "--max-lifetime", metavar="DURATION", help="end the session this long after it started"
    )
    parser.add_argument(
        "--execution-timeout",
        metavar="DURATION",
        help="default limit of one cell's execution (default 10m)",
    )


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="create the session and return")
    parser.add_argument(
        "--wait-timeout",
        type=int,
        default=DEFAULT_WAIT_SECONDS,
        metavar="S",
        help=f"how long to wait for Ready (default {DEFAULT_WAIT_SECONDS})",
    )


def parse_duration(text: str, option: str) -> int:
    """Seconds of `90`, `90s`, `30m`, `2h`, `1d` or `1h30m`."""
    value = text.strip()
    if not _DURATION.match(value):
        raise UsageError(f"{option} {text!r}: expected a duration such as 90s, 30m, 2h or 1h30m")
    if value.isdigit():
        return int(value)
    return sum(int(n) * _UNITS[unit] for n, unit in re.findall(r"(\d+)([smhd])", value))


def _lifetimes(args: argparse.Namespace) -> dict[str, int]:
    spec: dict[str, int] = {}
    for option, field in (
        ("idle_timeout", "idleTimeoutSeconds"),
        ("max_lifetime", "maxLifetimeSeconds"),
        ("execution_timeout", "executionTimeoutSeconds"),
    ):
        text = getattr(args, option)
        if text is not None:
            spec[field] = parse_duration(text, "--" + option.replace("_", "-"))
    return spec


def validated(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as given, or a UsageError with the API model's first complaint."""
    from pydantic import ValidationError

    from nbkube.api.session import NotebookSessionSpec

    try:
        NotebookSessionSpec.model_validate(spec)
    except ValidationError as exc:
        raise invalid_spec("session", exc) from None
    return spec


def build_spec(
    args: argparse.Namespace,
    config_map: str | None = None,
    key: str | None = None,
    uploads: list[Upload] | None = None,
) -> dict[str, Any]:
    """The NotebookSession spec of `session create`, checked against the API model."""
    spec: dict[str, Any] = {"environmentRef": {"name": args.env}}
    notebook: dict[str, Any] = {}
    if args.from_file is not None:
        assert config_map is not None and key is not None
        notebook = {"configMapRef": {"name": config_map, "key": key}, "name": key}
    elif args.cells:
        notebook = {"cells": [{"source": source} for source in args.cells]}
    elif args.repo_path:
        notebook = {"repoPath": args.repo_path, "name": _file_name(args.repo_path)}
    elif args.from_run:
        notebook = {"fork": {"run": args.from_run}}
    if notebook:
        spec["notebook"] = notebook
    params = parse_parameters(args.parameters)
    if params:
        spec["parameters"] = params
    if uploads:
        assert config_map is not None
        spec["files"] = files_spec(config_map, uploads)
    spec.update(_lifetimes(args))
    return validated(spec)


def _file_name(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name if re.match(r"^[-._a-zA-Z0-9]+\.ipynb$", name) else "notebook.ipynb"


def fork_spec(args: argparse.Namespace, source: dict[str, Any]) -> dict[str, Any]:
    """The spec of `session fork`: SESSION's notebook at --at (its head), in its environment by default."""
    source_spec = source.get("spec") or {}
    env = args.env or (source_spec.get("environmentRef") or {}).get("name")
    fork: dict[str, Any] = {"session": source["metadata"]["name"]}
    if args.at:
        fork["commit"] = args.at.lower()
    notebook: dict[str, Any] = {"fork": fork}
    name = (source_spec.get("notebook") or {}).get("name")
    if name:
        notebook["name"] = name
    return validated({"environmentRef": {"name": env}, "notebook": notebook, **_lifetimes(args)})


def session_manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "NotebookSession",
        "metadata": {"name": name, "labels": {CREATED_BY_LABEL: "nbkube-cli"}},
        "spec": spec,
    }


def config_map_manifest(name: str, data: dict[str, str], binary: dict[str, str]) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {CREATED_BY_LABEL: "nbkube-cli"}},
        "data": data,
    }
    if binary:
        manifest["binaryData"] = binary
    return manifest


def session_objects(args: argparse.Namespace, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The manifest `session create`'s arguments describe (`nbkube mcp` builds the same), and the
    ConfigMap of its local notebook and --file uploads (None without them); read and checked before
    the cluster is reached."""
    data: dict[str, str] = {}
    key = None
    base = Path(f".{name}.ipynb")  # --file paths are placed relative to the current folder
    if args.from_file is not None:
        key = config_map_key(args.from_file)
        data[key] = notebook_payload(args.from_file, key, SESSION_TOO_BIG_HINT)
        base = args.from_file
    uploads = collect(args.files, base, set(data))
    if uploads:
        check_size(base, key or "", data.get(key or "", ""), uploads)
    manifest = session_manifest(name, build_spec(args, name, key, uploads))
    config_map = config_map_manifest(name, data, binary_data(uploads)) if data or uploads else None
    return manifest, config_map


def create_session(kube: ClusterClient, manifest: dict[str, Any], config_map: dict[str, Any] | None) -> None:
    """Creates the session (and its ConfigMap, owned by it) once its environment is known to exist."""
    env = manifest["spec"]["environmentRef"]["name"]
    if not kube.environment_exists(env):
        raise CliError(
            f"NotebookEnvironment {env!r} not found in namespace {kube.namespace} "
            f"(kubectl get nbenv -n {kube.namespace} lists them)"
        )
    if config_map is not None:
        create_with_config_map(kube, manifest, config_map)
    else:
        kube.create_session(manifest)


def cmd_create(args: argparse.Namespace) -> int:
    name = check_name(args.name, "session")
    manifest, config_map = session_objects(args, name)
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        create_session(kube, manifest, config_map)
        print(f"notebooksession {kube.namespace}/{name} created", flush=True)
        if args.no_wait:
            return EXIT_OK
        return wait_ready(kube, name, args.wait_timeout)
    finally:
        kube.close()


def create_with_config_map(kube: ClusterClient, manifest: dict[str, Any], config_map: dict[str, Any]) -> None:
    """The ConfigMap, then the session, then the ConfigMap owned by the session (deleted with it)."""
    create_owning(kube, config_map, lambda: kube.create_session(manifest), "session")


def wait_ready(kube: ClusterClient, name: str, timeout: float) -> int:
    """Follows the session until it is Ready (prints its branch and head) or Ended (its reason; exit 1)."""
    deadline = time.monotonic() + timeout
    last: tuple[str, str, str] | None = None
    session: dict[str, Any] = {}
    for session in kube.watch_session(name, lambda s: session_state(s) != SessionState.PENDING, deadline):
        status = session.get("status") or {}
        seen = (session_state(session), status.get("reason") or "", status.get("message") or "")
        if seen[0] == SessionState.PENDING and seen != last and (seen[1] or seen[2]):
            why = ": ".join(part for part in seen[1:] if part)
            print(f"{name}: Pending ({why})", flush=True)
        last = seen
    status = session.get("status") or {}
    state = session_state(session)
    if state == SessionState.READY:
        print(f"{name} Ready: {ready_line(status)}")
        return EXIT_OK
    detail = f"{status.get('reason') or state}: {status.get('message') or ''}".rstrip(": ")
    if state == SessionState.ENDED:
        print(f"{name} Ended: {detail}", file=sys.stderr)
    else:
        print(
            f"{name} is still {state} after {timeout:.0f}s ({detail}); it keeps starting "
            f"(`nbkube session list` shows it)",
            file=sys.stderr,
        )
    return EXIT_FAILED


def ready_line(status: dict[str, Any]) -> str:
    kernel = (status.get("kernel") or {}).get("state") or "-"
    head = (status.get("head") or "")[:12] or "-"
    return f"kernel {kernel}, branch {status.get('branch') or '-'}, head {head}"


HEADER = ["NAME", "ENV", "STATE", "REASON", "KERNEL", "OPS", "HEAD", "LAST-ACTIVITY", "AGE"]


def session_row(session: dict[str, Any]) -> list[str]:
    status = session.get("status") or {}
    return [
        session["metadata"]["name"],
        ((session.get("spec") or {}).get("environmentRef") or {}).get("name", "-"),
        session_state(session),
        status.get("reason") or "-",
        (status.get("kernel") or {}).get("state") or "-",
        str(status.get("operations", 0)),
        (status.get("head") or "")[:12] or "-",
        age(status.get("lastActivityTime")),
        age(session["metadata"].get("creationTimestamp")),
    ]


def cmd_list(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        sessions = kube.list_sessions()
    finally:
        kube.close()
    if not sessions:
        print(f"no NotebookSessions in namespace {kube.namespace}", file=sys.stderr)
        return EXIT_OK
    sessions.sort(key=lambda s: s["metadata"].get("creationTimestamp") or "")
    print(format_table([HEADER, *[session_row(s) for s in sessions]]))
    return EXIT_OK


def describe(session: dict[str, Any]) -> str:
    meta, spec, status = session["metadata"], session.get("spec") or {}, session.get("status") or {}
    kernel = status.get("kernel") or {}
    fields = [
        ("Name", meta["name"]),
        ("Namespace", meta.get("namespace", "")),
        ("Environment", (spec.get("environmentRef") or {}).get("name", "")),
        ("Started from", _origin(spec.get("notebook") or {})),
        ("State", session_state(session)),
        ("Reason", status.get("reason") or "-"),
        ("Message", status.get("message") or "-"),
        (
            "Kernel",
            f"{kernel['state']} ({kernel.get('kernelId', '')[:8]} on {kernel.get('pod')})" if kernel else "-",
        ),
        ("Execution count", str(status.get("executionCount", 0))),
        ("Operations", str(status.get("operations", 0))),
        ("Branch", status.get("branch") or "-"),
        ("Notebook", status.get("path") or "-"),
        ("Head", status.get("head") or "-"),
        ("Idle timeout", f"{spec.get('idleTimeoutSeconds', 1800)}s"),
        ("Started", status.get("startTime") or "-"),
        ("Last activity", status.get("lastActivityTime") or "-"),
    ]
    if status.get("endTime"):
        fields.append(("Ended", status["endTime"]))
    return describe_lines(fields, status)


def _origin(notebook: dict[str, Any]) -> str:
    named = notebook_origin(notebook)
    if named is not None:
        return named
    fork = notebook.get("fork")
    if fork:
        if fork.get("run"):
            return f"run {fork['run']}"
        return f"session {fork.get('session')} at {fork.get('commit') or 'its head'}"
    if notebook.get("cells"):
        return f"{len(notebook['cells'])} inline cell(s)"
    return "an empty notebook"


def cmd_describe(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        session = kube.find_session(args.name)
    finally:
        kube.close()
    print(describe(session))
    return EXIT_OK


def cmd_fork(args: argparse.Namespace) -> int:
    name = check_name(args.name, "session")
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        source = kube.find_session(args.source)
        if not (source.get("status") or {}).get("branch"):
            raise CliError(f"session {args.source} has no history yet to fork from (it is still starting)")
        if args.at:
            args.at = full_commit(sessionops.SessionApi(kube, args.source), args.at)
        spec = fork_spec(args, source)
        kube.create_session(session_manifest(name, spec))
        at = args.at[:12] if args.at else f"its head {((source.get('status') or {}).get('head') or '')[:12]}"
        print(f"notebooksession {kube.namespace}/{name} created from {args.source} at {at}", flush=True)
        if args.no_wait:
            return EXIT_OK
        return wait_ready(kube, name, args.wait_timeout)
    finally:
        kube.close()


def full_commit(api: sessionops.SessionApi, prefix: str) -> str:
    """The commit of the session's branch that `prefix` names, or a CliError (none, or several)."""
    wanted = prefix.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{4,64}", wanted):
        raise UsageError(f"--at {prefix!r}: expected a commit id (hex, as `nbkube session log` prints)")
    history = api.read_json("history", {"limit": str(HISTORY_SEARCHED)})
    found = [str(e["commit"]) for e in history if str(e.get("commit", "")).startswith(wanted)]
    if not found:
        raise CliError(
            f"{prefix} is not a commit of session {api.name}'s branch "
            f"(`nbkube session log {api.name}` lists them)"
        )
    if len(found) > 1:
        raise CliError(
            f"{prefix} names {len(found)} commits of session {api.name}'s branch: give more digits"
        )
    return found[0]


def cmd_delete(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        session = kube.find_session(args.name)
        kube.delete_session(args.name)
    finally:
        kube.close()
    branch = (session.get("status") or {}).get("branch")
    kept = f"; its history stays on branch {branch} (nbkube clone)" if branch else ""
    print(f"notebooksession {kube.namespace}/{args.name} deleted{kept}")
    return EXIT_OK
