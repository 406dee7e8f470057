"""How `nbkube run` shows a run's progress: a bar redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

from typing import Any, TextIO

from nbkube.api.states import CellState, RunState
from nbkube.cli.kubeclient import run_state

BAR_WIDTH = 24


def counts(run: dict[str, Any]) -> tuple[int | None, int | None]:
    """(done, total) of a run's cells, or of a sweep's child runs."""
    status = run.get("status") or {}
    sweep = status.get("sweep")
    if sweep:
        return sweep.get("succeeded", 0) + sweep.get("failed", 0), sweep.get("total")
    done, total = status.get("cellsDone"), status.get("cellsTotal")
    if (done is None or total is None) and status.get("progress"):
        left, _, right = str(status["progress"]).partition("/")
        if left.isdigit() and right.isdigit():
            done, total = int(left), int(right)
    return done, total


def describe_activity(run: dict[str, Any]) -> str:
    """What the run is doing now: the running cell, the sweep's children, or why it waits."""
    status = run.get("status") or {}
    state = run_state(run)
    sweep = status.get("sweep")
    if sweep:
        parts = [f"{sweep.get(k, 0)} {k}" for k in ("running", "failed") if sweep.get(k)]
        return f"{state}, child runs: " + (", ".join(parts) if parts else "none running")
    running = [c for c in status.get("cells") or [] if c.get("state") == CellState.RUNNING]
    if running:
        return f"{state}: cell {running[-1]['index']} ({running[-1].get('id', '?')})"
    reason = status.get("reason")
    if state == RunState.PENDING and reason and reason != RunState.PENDING:
        return f"{state} ({reason})"
    if status.get("attempt", 0) > 1 and state == RunState.RUNNING:
        return f"{state} (attempt {status['attempt']})"
    return state


class Progress:
    def __init__(self, name: str, out: TextIO, tty: bool) -> None:
        self.name = name
        self.out = out
        self.tty = tty
        self.last = ""
        self.width = 0

    def update(self, run: dict[str, Any]) -> None:
        done, total = counts(run)
        activity = describe_activity(run)
        if self.tty:
            line = f"{self.name} {bar(done, total)} {_fraction(done, total)}  {activity}"
            pad = max(0, self.width - len(line))
            self.out.write("\r" + line + " " * pad)
            self.width = len(line)
            self.out.flush()
            return
        line = f"{self.name}: {_fraction(done, total)} {activity}"
        if line != self.last:
            self.out.write(line + "\n")
            self.out.flush()
            self.last = line

    def close(self) -> None:
        if self.tty and self.width:
            self.out.write("\n")
            self.out.flush()
            self.width = 0


def bar(done: int | None, total: int | None, width: int = BAR_WIDTH) -> str:
    filled = round(width * done / total) if done is not None and total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _fraction(done: int | None, total: int | None) -> str:
    return f"{done if done is not None else 0}/{total if total is not None else '?'}"
