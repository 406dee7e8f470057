"""Per-cell entries of a run's status, bounded so the whole status stays small.

etcd caps an object at 1.5 MiB and every status patch travels to every watcher, so each cell's
summary is short and the list keeps at most MAX_CELL_ENTRIES entries: running and failed cells
always, then the most recent ones. Full outputs live in the results repository.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nbkube.api import CellStatus
from nbkube.api.states import CellState

MAX_SUMMARY_CHARS = 200
MAX_CELL_ENTRIES = 500
_ALWAYS_KEPT = {
    CellState.RUNNING,
    CellState.FAILED,
    CellState.TIMED_OUT,
    CellState.KERNEL_DIED,
    CellState.CANCELLED,
    CellState.INPUT_REQUESTED,
}


def shorten(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def summarize_outputs(outputs: Iterable[Any]) -> str | None:
    """The most telling line of a cell's outputs: its error, else its last text."""
    last_text: str | None = None
    for out in outputs:
        kind = out.get("output_type")
        if kind == "error":
            return shorten(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}")
        if kind == "stream":
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            lines = [line for line in text.splitlines() if line.strip()]
            if lines:
                last_text = lines[-1]
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            rich = [m for m in data if m != "text/plain"]
            if kind == "display_data" and rich:
                last_text = f"<{rich[0]}>"  # a figure's text/plain is only its repr
            elif "text/plain" in data:
                plain = data["text/plain"]
                plain = "".join(plain) if isinstance(plain, list) else plain
                last_text = plain
            elif data:
                last_text = f"<{next(iter(data))}>"
    return shorten(last_text) if last_text else None


def bound_cells(cells: list[CellStatus], limit: int = MAX_CELL_ENTRIES) -> tuple[list[CellStatus], int]:
    """Returns at most ``limit`` entries (sorted by index) and how many were left out."""
    if len(cells) <= limit:
        return cells, 0
    keep = {c.index for c in cells if c.state in _ALWAYS_KEPT}
    if len(keep) > limit:
        keep = set(sorted(keep)[-limit:])
    for cell in sorted(cells, key=lambda c: c.index, reverse=True):
        if len(keep) >= limit:
            break
        if cell.state != CellState.PENDING:
            keep.add(cell.index)
    for cell in cells:
        if len(keep) >= limit:
            break
        keep.add(cell.index)
    kept = [c for c in cells if c.index in keep]
    return kept, len(cells) - len(kept)


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m"
