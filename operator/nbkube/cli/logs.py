"""`nbkube logs RUN [-f]`: a run's cell outputs, from the operator's /logs stream (NDJSON events)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any, TextIO

from nbkube.api.states import CellState
from nbkube.cli.errors import EXIT_OK, CliError
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options
from nbkube.cli.userapi import UserApi, UserApiError
from nbkube.userapi import paths

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "logs",
        help="print a run's cell outputs",
        description="Prints a run's cell outputs (with -f: as they stream, until the run ends).",
    )
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("-f", "--follow", action="store_true", help="stream new outputs until the run ends")
    add_cluster_options(parser)
    parser.set_defaults(handler=cmd_logs)


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def format_output(output: dict[str, Any], color: bool) -> str:
    """One nbformat output as terminal text (always ending with a newline, except stream chunks)."""
    kind = output.get("output_type")
    if kind == "stream":
        return _text(output.get("text", ""))
    if kind in ("execute_result", "display_data"):
        data = output.get("data") or {}
        images = [mime for mime in data if mime.startswith("image/")]
        if images:
            return " ".join(f"[{mime}]" for mime in images) + "\n"
        if "text/plain" in data:
            return _text(data["text/plain"]).rstrip("\n") + "\n"
        return " ".join(f"[{mime}]" for mime in data) + "\n" if data else ""
    if kind == "error":
        summary = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
        traceback = "\n".join(_text(line) for line in output.get("traceback") or [])
        plain = ANSI.sub("", traceback)
        shown = traceback if color else plain
        lines = [line for line in plain.splitlines() if line.strip()]
        if not lines or lines[-1].strip() != summary.strip():
            shown = f"{shown}\n{summary}" if shown else summary
        return shown.rstrip("\n") + "\n"
    return f"[{kind} output]\n"


class CellPrinter:
    """Cell outputs as terminal text, under a rule per cell (a run's log, a session's execution)."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
        self.at_line_start = True

    def write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.at_line_start = text.endswith("\n")

    def rule(self, title: str) -> None:
        if not self.at_line_start:
            self.write("\n")
        self.write(f"── {title} ──\n")


class LogPrinter(CellPrinter):
    """Turns /logs events into text: a header per cell, its outputs, a line for retries and the end."""

    def __init__(self, out: TextIO, color: bool, cell_id: Callable[[int], str | None]) -> None:
        super().__init__(out, color)
        self.cell_id = cell_id
        self.current: int | None = None
        self.end: dict[str, Any] | None = None

    def header(self, index: int) -> None:
        cell_id = self.cell_id(index)
        self.rule(f"cell {index} ({cell_id})" if cell_id else f"cell {index}")
        self.current = index

    def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        index = event.get("index")
        if kind == "cellStarted" and isinstance(index, int):
            self.header(index)
        elif kind == "output" and isinstance(index, int):
            if index != self.current:
                self.header(index)
            self.write(format_output(event.get("output") or {}, self.color))
        elif kind == "cellFinished" and isinstance(index, int):
            state = event.get("state")
            if state not in (None, CellState.SUCCEEDED):
                self.rule(f"cell {index}: {state}")
        elif kind == "retry":
            self.rule(f"retrying: attempt {event.get('attempt')}")
            self.current = None
        elif kind == "end":
            self.end = event
            self.rule(f"run {event.get('state')} ({event.get('reason')})")
        self.out.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    cluster = ClusterOptions.from_args(args)
    kube = ClusterClient(cluster)
    try:
        run = kube.find_run(args.run)
        sweep = (run.get("status") or {}).get("sweep")
        if sweep:
            children = ", ".join(sweep.get("children") or []) or "none yet"
            raise CliError(f"{args.run} is a sweep: its outputs are in its child runs ({children})")
        ids = {c["index"]: c.get("id", "") for c in (run.get("status") or {}).get("cells") or []}
        asked: set[int] = set()

        def cell_id(index: int) -> str | None:
            if index not in ids and index not in asked:  # a cell the status did not list yet
                asked.add(index)
                for cell in (kube.find_run(args.run).get("status") or {}).get("cells") or []:
                    ids[cell["index"]] = cell.get("id", "")
            return ids.get(index) or None

        printer = LogPrinter(sys.stdout, sys.stdout.isatty(), cell_id)
        query = {"follow": "true"} if args.follow else None
        try:
            for line in UserApi(kube).lines(paths.run_log_path(kube.namespace, args.run), query):
                if line.strip():
                    printer.handle(_event(line))
        except UserApiError as exc:
            if exc.status == 404:
                raise CliError(f"no logs for {kube.namespace}/{args.run}: {exc.message}") from None
            if exc.status in (401, 403):
                raise CliError(f"reading {args.run}'s logs was refused: {exc.message}") from None
            raise
        return EXIT_OK
    finally:
        kube.close()


def _event(line: bytes) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError:
        raise CliError(f"unexpected line in the operator's log stream: {line[:200]!r}") from None
    if not isinstance(event, dict):
        raise CliError(f"unexpected event in the operator's log stream: {line[:200]!r}")
    return event
