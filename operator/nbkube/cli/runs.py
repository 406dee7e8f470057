"""`nbkube cancel RUN`, `nbkube get [RUN]`, `nbkube describe RUN`: small views of NotebookRuns."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from nbkube.api.states import TERMINAL_RUN_STATES
from nbkube.cli import sweeps
from nbkube.cli.errors import EXIT_OK
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options, run_state
from nbkube.cli.tables import describe_lines, format_table, notebook_origin


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cancel = subparsers.add_parser("cancel", help="cancel a run (sets spec.cancel)")
    cancel.add_argument("run", metavar="RUN")
    cancel.add_argument("--wait", action="store_true", help="wait until the run has ended")
    add_cluster_options(cancel)
    cancel.set_defaults(handler=cmd_cancel)

    get = subparsers.add_parser("get", help="a table of runs")
    get.add_argument("run", metavar="RUN", nargs="?")
    add_cluster_options(get)
    get.set_defaults(handler=cmd_get)

    describe = subparsers.add_parser("describe", help="a run's state and its per-cell table")
    describe.add_argument("run", metavar="RUN")
    add_cluster_options(describe)
    describe.set_defaults(handler=cmd_describe)


def cmd_cancel(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        run = kube.find_run(args.run)
        state = run_state(run)
        if state in TERMINAL_RUN_STATES:
            print(f"notebookrun {kube.namespace}/{args.run} already ended {state}")
            return EXIT_OK
        if not (run.get("spec") or {}).get("cancel"):
            kube.patch_run(args.run, {"spec": {"cancel": True}})
        print(f"notebookrun {kube.namespace}/{args.run} cancel requested")
        if args.wait:
            for run in kube.watch_run(args.run):  # noqa: B007 - the last one is the ended run
                pass
            status = run.get("status") or {}
            print(f"notebookrun {kube.namespace}/{args.run} {run_state(run)}: {status.get('message') or ''}")
        return EXIT_OK
    finally:
        kube.close()


def age(timestamp: str | None, now: datetime | None = None) -> str:
    if not timestamp:
        return "-"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def run_row(run: dict[str, Any]) -> list[str]:
    status = run.get("status") or {}
    sweep = status.get("sweep")
    progress = (
        f"{sweep.get('succeeded', 0) + sweep.get('failed', 0)}/{sweep.get('total', 0)} runs"
        if sweep
        else status.get("progress") or "-"
    )
    return [
        run["metadata"]["name"],
        ((run.get("spec") or {}).get("environmentRef") or {}).get("name", "-"),
        run_state(run),
        status.get("reason") or "-",
        progress,
        status.get("duration") or "-",
        age(run["metadata"].get("creationTimestamp")),
    ]


HEADER = ["NAME", "ENV", "STATE", "REASON", "PROGRESS", "DURATION", "AGE"]


def cmd_get(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        runs = [kube.find_run(args.run)] if args.run else kube.list_runs()
    finally:
        kube.close()
    if not runs:
        print(f"no NotebookRuns in namespace {kube.namespace}", file=sys.stderr)
        return EXIT_OK
    runs.sort(key=lambda r: r["metadata"].get("creationTimestamp") or "")
    print(format_table([HEADER, *[run_row(r) for r in runs]]))
    table = sweeps.sweep_table(runs[0]) if args.run else None
    if table is not None and table.rows:
        print(f"\n{table.text()}")
    return EXIT_OK


def describe(run: dict[str, Any]) -> str:
    meta, spec, status = run["metadata"], run.get("spec") or {}, run.get("status") or {}
    fields = [
        ("Name", meta["name"]),
        ("Namespace", meta.get("namespace", "")),
        ("Environment", (spec.get("environmentRef") or {}).get("name", "")),
        ("Notebook", _source(spec.get("notebook") or {})),
        ("Parameters", ", ".join(f"{k}={v!r}" for k, v in (spec.get("parameters") or {}).items()) or "-"),
        ("State", run_state(run)),
        ("Reason", status.get("reason") or "-"),
        ("Message", status.get("message") or "-"),
        ("Progress", status.get("progress") or "-"),
        ("Attempt", str(status.get("attempt", 0))),
        ("Started", status.get("startTime") or "-"),
        ("Completed", status.get("completionTime") or "-"),
        ("Duration", status.get("duration") or "-"),
    ]
    if spec.get("cancel"):
        fields.append(("Cancel", "requested"))
    result = status.get("result")
    if result:
        fields.append(("Result", f"{result.get('path')} at commit {result.get('commit')}"))
    sweep = status.get("sweep")
    if sweep:
        fields.append(
            (
                "Sweep",
                ", ".join(
                    f"{sweep.get(k, 0)} {k}" for k in ("total", "pending", "running", "succeeded", "failed")
                ),
            )
        )
        fields += [("Child run", child) for child in sweep.get("children") or []]
    return describe_lines(fields, status)


def _source(notebook: dict[str, Any]) -> str:
    named = notebook_origin(notebook)
    if named is not None:
        return named
    return f"{len(notebook.get('cells') or [])} inline cell(s)"


def cmd_describe(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        run = kube.find_run(args.run)
    finally:
        kube.close()
    print(describe(run))
    return EXIT_OK
