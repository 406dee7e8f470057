"""The `nbkube` command line: run notebooks on the cluster, follow, fetch and cancel them, edit cells,
drive notebook sessions.

    nbkube run analysis.ipynb --env py -p alpha=0.3     upload, create a NotebookRun, follow it
    nbkube logs RUN [-f]                                 cell outputs, as they stream with -f
    nbkube fetch RUN [--html] [--ref C] [-o FILE]        the executed notebook (or as HTML) from the results
    nbkube ui                                            the read-only web page, on 127.0.0.1
    nbkube clone [DIR] | pull [DIR]                      git clone / pull the namespace's results
    nbkube cancel RUN | get [RUN] | describe RUN
    nbkube sweep SWEEP [--format table|csv|json]        a sweep's table: parameters, state, values
    nbkube sweep SWEEP --plot x=alpha,y=acc[,by=seed] -o sweep.png   ... drawn with matplotlib
    nbkube cells list|insert|replace|delete NB.ipynb     edit a local notebook by cell id
    nbkube session create NAME --env py [--from-file NB.ipynb]   a live kernel, Ready, its branch
    nbkube session list | describe NAME | delete NAME
    nbkube session edit NAME insert|replace|delete ...   edit the session's notebook by cell id
    nbkube session exec NAME [ID ...|--all|--from ID|--code SRC]   execute, outputs streaming
    nbkube session state|log|show NAME                   variables, history, the notebook at a commit
    nbkube session interrupt|restart NAME | fork NAME NEW [--at SHA]
    nbkube schedule create NB.ipynb --env py --cron '0 6 * * *'   run a notebook on a cron schedule
    nbkube schedule list | suspend NAME | resume NAME | trigger NAME
    nbkube mcp                                          an MCP server on stdio: sessions and runs as tools

Exit codes: 0 success; 1 a run that failed or was cancelled, a session cell that failed, a refused or
conflicting session operation, or an error reaching the cluster or the operator (missing run, session
or environment, ...); 2 a bad command line or input file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nbkube import __version__
from nbkube.cli import cells, clone, fetch, logs, run, runs, schedules, sessions, sweeps, ui
from nbkube.cli.errors import EXIT_USAGE, CliError
from nbkube.mcp import command as mcp_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbkube",
        description="Run Jupyter notebooks on Kubernetes with nbkube, drive notebook sessions, and edit "
        "notebooks by cell id.",
    )
    parser.add_argument("--version", action="version", version=f"nbkube {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.register(subparsers)
    logs.register(subparsers)
    fetch.register(subparsers)
    clone.register(subparsers)
    runs.register(subparsers)
    sweeps.register(subparsers)
    cells.register(subparsers)
    sessions.register(subparsers)
    schedules.register(subparsers)
    ui.register(subparsers)
    mcp_command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), message already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.handler(args))
    except CliError as exc:
        print(f"nbkube: error: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("nbkube: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `nbkube logs RUN | head`
        sys.stderr.close()
        return 0
