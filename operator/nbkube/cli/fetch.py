"""`nbkube fetch RUN [--html] [--ref COMMIT] [-o FILE]`: the executed notebook, from the results repository
at the run's commit (or another commit: a checkpoint, a branch), as .ipynb or rendered as HTML."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from nbkube.api.states import TERMINAL_RUN_STATES
from nbkube.cli.errors import EXIT_OK, CliError
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options, run_state
from nbkube.cli.userapi import UserApi, UserApiError
from nbkube.userapi import paths


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fetch",
        help="download a run's executed notebook",
        description="Writes the executed notebook of a finished run (status.result: a path at a commit "
        "of the results repository) to FILE; with --html, rendered by the operator as one standalone HTML "
        "page (images inlined, no script of the notebook's, nothing loaded from the network).",
    )
    parser.add_argument("run", metavar="RUN")
    parser.add_argument(
        "-o",
        "--output",
        help="where to write it ('-' for stdout; default: RUN.ipynb, RUN.html with --html)",
    )
    parser.add_argument("--html", action="store_true", help="the notebook rendered as standalone HTML")
    parser.add_argument(
        "--ref",
        metavar="COMMIT",
        help="the run's notebook at this commit of the results repository (a full commit id, e.g. a "
        "checkpoint's, or a branch) instead of the run's result",
    )
    add_cluster_options(parser)
    parser.set_defaults(handler=cmd_fetch)


def result_of(run: dict[str, Any]) -> dict[str, str]:
    """status.result, or a CliError saying why there is none."""
    name = run["metadata"]["name"]
    status = run.get("status") or {}
    result = status.get("result")
    sweep = status.get("sweep")
    if sweep:
        children = ", ".join(sweep.get("children") or []) or "none yet"
        raise CliError(
            f"{name} is a sweep and has no notebook of its own: `nbkube sweep {name}` prints its table; "
            f"fetch its child runs ({children})"
        )
    if result and result.get("commit") and result.get("path"):
        return {"commit": str(result["commit"]), "path": str(result["path"])}
    state = run_state(run)
    if state in TERMINAL_RUN_STATES:
        why = f"{status.get('reason') or state}: {status.get('message') or ''}".rstrip(": ")
        raise CliError(f"{name} has no result: it ended {state} before one was committed ({why})")
    progress = f", {status['progress']} cells" if status.get("progress") else ""
    raise CliError(
        f"{name} has no result yet: it is {state}{progress}; `nbkube logs -f {name}` follows it until it ends"
    )


def cmd_fetch(args: argparse.Namespace) -> int:
    cluster = ClusterOptions.from_args(args)
    kube = ClusterClient(cluster)
    try:
        run = kube.find_run(args.run)
        result = result_of(run)
        if args.ref:
            result = {"commit": args.ref, "path": result["path"]}
        route = paths.html_path if args.html else paths.file_path
        try:
            data, headers = UserApi(kube).get(
                route(kube.namespace, result["path"]), {"ref": result["commit"]}
            )
        except UserApiError as exc:
            if exc.status == 400:
                raise CliError(f"--ref {result['commit']!r}: {exc.message}") from None
            if exc.status == 404:
                raise CliError(
                    f"{result['path']} at commit {result['commit'][:12]} is not in namespace "
                    f"{kube.namespace}'s results repository"
                ) from None
            if exc.status in (401, 403):
                raise CliError(f"reading {args.run}'s result was refused: {exc.message}") from None
            raise
    finally:
        kube.close()
    commit = next((v for k, v in headers.items() if k.lower() == "x-nbkube-commit"), result["commit"])
    origin = f"{result['path']} at commit {commit} of the results repository"
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        print(f"{args.run}: {origin}", file=sys.stderr)
        return EXIT_OK
    target = Path(args.output or f"{args.run}.{'html' if args.html else 'ipynb'}")
    write_atomically(target, data)
    print(f"wrote {target} ({len(data)} bytes): {origin} ({run_state(run)})")
    return EXIT_OK


def write_atomically(target: Path, data: bytes) -> None:
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CliError(f"cannot write {target}: {exc.strerror or exc}") from None
