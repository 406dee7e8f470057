"""`nbkube fetch RUN [-o FILE]`: the executed notebook, from the results repository at the run's commit."""

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
        "of the results repository) to FILE.",
    )
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("-o", "--output", help="where to write it ('-' for stdout; default: RUN.ipynb)")
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
        try:
            data, _ = UserApi(kube).get(
                paths.file_path(kube.namespace, result["path"]), {"ref": result["commit"]}
            )
        except UserApiError as exc:
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
    origin = f"{result['path']} at commit {result['commit']} of the results repository"
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        print(f"{args.run}: {origin}", file=sys.stderr)
        return EXIT_OK
    target = Path(args.output or f"{args.run}.ipynb")
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
