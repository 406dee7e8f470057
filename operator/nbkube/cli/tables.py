"""Plain aligned tables, as kubectl prints them, and the `describe` layout runs and sessions share."""

from __future__ import annotations

from typing import Any


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def describe_lines(fields: list[tuple[str, str]], status: dict[str, Any]) -> str:
    """`Key: value` lines, then the status' per-cell table (as `kubectl describe` lays things out)."""
    width = max(len(k) for k, _ in fields) + 1
    lines = [f"{(key + ':').ljust(width)} {value}" for key, value in fields]
    cells = status.get("cells") or []
    if cells:
        rows = [["INDEX", "ID", "STATE", "EXEC", "DURATION", "SUMMARY"]]
        for cell in cells:
            duration = cell.get("durationMs")
            rows.append(
                [
                    str(cell.get("index")),
                    cell.get("id") or "-",
                    cell.get("state") or "-",
                    str(cell["executionCount"]) if cell.get("executionCount") is not None else "-",
                    f"{duration} ms" if duration is not None else "-",
                    (cell.get("summary") or "").replace("\n", " ")[:80],
                ]
            )
        lines += ["", "Cells:", *("  " + line for line in format_table(rows).splitlines())]
        if status.get("cellsOmitted"):
            lines.append(f"  ({status['cellsOmitted']} more cell(s) not listed in the status)")
    return "\n".join(lines)


def notebook_origin(notebook: dict[str, Any]) -> str | None:
    """Where a spec's notebook comes from, when it names a ConfigMap or a repository path."""
    if notebook.get("configMapRef"):
        ref = notebook["configMapRef"]
        return f"ConfigMap {ref.get('name')} key {ref.get('key')}"
    if notebook.get("repoPath"):
        return f"results repository {notebook['repoPath']}"
    return None
