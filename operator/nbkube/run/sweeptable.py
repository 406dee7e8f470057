"""A sweep's table: one row per child run (its parameters, state, duration, recorded values), pure.

The parent's status keeps a bounded copy (`status.sweep.rows`: strings cut to TABLE_STRING characters,
the first MAX_COLUMNS value names, rows past STATUS_TABLE_BYTES counted in rowsOmitted); the results
repository gets the whole table as summary.csv and summary.json once the sweep ended. The CLI formats
the same rows (`table_lines`, `csv_bytes`). Nothing here knows of Kubernetes clients: the rows are made
from the child NotebookRun objects as the API returns them.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from nbkube.api import RunState, SweepRow
from nbkube.api.common import parse_timestamp

TABLE_STRING = 64
"""Strings (parameters, values) in the parent's status are cut to this many characters."""
MAX_COLUMNS = 16
"""Value names (columns) the parent's status keeps."""
STATUS_TABLE_BYTES = 256 * 1024
"""The status table's rows stop here (their JSON); the rest are counted in rowsOmitted."""
MESSAGE_CHARS = 256
SUMMARY_KIND = "SweepSummary"

Row = dict[str, Any]


def child_row(index: int, name: str, combo: Mapping[str, Any], child: Mapping[str, Any] | None) -> Row:
    """The whole row of child `name` (None: not created yet), as summary.json holds it."""
    status = (child or {}).get("status") or {}
    started = parse_timestamp(status.get("startTime"))
    ended = parse_timestamp(status.get("completionTime"))
    state = status.get("state") or RunState.PENDING
    ended_badly = state in (RunState.FAILED, RunState.CANCELLED)
    result = status.get("result") or {}
    return {
        "name": name,
        "index": index,
        "parameters": dict(combo),
        "state": str(state),
        "reason": status.get("reason") if status.get("state") else None,
        "message": status.get("message") if ended_badly else None,
        "duration": status.get("duration"),
        "seconds": round(ended - started) if started is not None and ended is not None else None,
        "values": dict(status.get("values") or {}),
        "valuesOmitted": int(status.get("valuesOmitted") or 0),
        "result": {"commit": result["commit"], "path": result["path"]}
        if result.get("commit") and result.get("path")
        else None,
    }


def rows_of(
    names: Sequence[str], combos: Sequence[Mapping[str, Any]], existing: Mapping[str, Mapping[str, Any]]
) -> list[Row]:
    """Every child's row, in matrix order (`names[i]` runs `combos[i]`)."""
    return [
        child_row(i, name, combo, existing.get(name))
        for i, (name, combo) in enumerate(zip(names, combos, strict=True))
    ]


def value_names(rows: Sequence[Row]) -> list[str]:
    """The names the rows recorded, in the order first seen (row by row)."""
    seen: dict[str, None] = {}
    for row in rows:
        for name in row["values"]:
            seen.setdefault(name, None)
    return list(seen)


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value[:TABLE_STRING]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return json.dumps(value, default=str)[:TABLE_STRING]


def status_rows(rows: Sequence[Row], columns: Sequence[str]) -> tuple[list[SweepRow], int]:
    """The bounded copy of `rows` for the parent's status, and how many rows were left out."""
    kept: list[SweepRow] = []
    size = 0
    keep = set(columns[:MAX_COLUMNS])
    for row in rows:
        entry = SweepRow(
            name=row["name"],
            index=row["index"],
            parameters={k: _short(v) for k, v in row["parameters"].items()},
            state=row["state"],
            reason=row["reason"],
            message=(row["message"] or "")[:MESSAGE_CHARS] or None,
            duration=row["duration"],
            seconds=row["seconds"],
            values={k: _short(v) for k, v in row["values"].items() if k in keep},
        )
        size += len(json.dumps(entry.to_api()))
        if size > STATUS_TABLE_BYTES:
            break
        kept.append(entry)
    return kept, len(rows) - len(kept)


def summary(
    *,
    namespace: str,
    name: str,
    uid: str,
    state: str,
    reason: str,
    parameter_names: Sequence[str],
    rows: Sequence[Row],
) -> dict[str, Any]:
    """What summary.json holds: the sweep, its columns and every row whole."""
    return {
        "kind": SUMMARY_KIND,
        "namespace": namespace,
        "sweep": name,
        "uid": uid,
        "state": state,
        "reason": reason,
        "total": len(rows),
        "succeeded": sum(1 for r in rows if r["state"] == RunState.SUCCEEDED),
        "failed": sum(1 for r in rows if r["state"] in (RunState.FAILED, RunState.CANCELLED)),
        "parameterNames": list(parameter_names),
        "valueNames": value_names(rows),
        "rows": list(rows),
    }


def json_bytes(summary_doc: Mapping[str, Any]) -> bytes:
    return (json.dumps(summary_doc, indent=1, sort_keys=False, default=str) + "\n").encode()


def csv_cell(value: Any) -> str:
    """A value as a CSV cell: empty for None, true/false, numbers as Python prints them (they read back
    exactly), strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return json.dumps(value, default=str)


def columns(parameter_names: Sequence[str], names: Sequence[str]) -> list[tuple[str, str, str]]:
    """The CSV's columns as (header, where, key): where is "row", "parameters" or "values"; a value
    whose name is taken by a parameter or a fixed column is headed `<name>.value`."""
    fixed = [("name", "row", "name"), ("index", "row", "index")]
    params = [(p, "parameters", p) for p in parameter_names]
    tail = [("state", "row", "state"), ("reason", "row", "reason"), ("seconds", "row", "seconds")]
    taken = {h for h, _, _ in (*fixed, *params, *tail, ("message", "", ""))}
    values = [(f"{v}.value" if v in taken else v, "values", v) for v in names]
    return [*fixed, *params, *tail, *values, ("message", "row", "message")]


def csv_bytes(rows: Sequence[Row], parameter_names: Sequence[str], names: Sequence[str]) -> bytes:
    """summary.csv: a header, then one line per row."""
    cols = columns(parameter_names, names)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([h for h, _, _ in cols])
    for row in rows:
        writer.writerow(
            [
                csv_cell(row.get(key) if where == "row" else (row.get(where) or {}).get(key))
                for _, where, key in cols
            ]
        )
    return out.getvalue().encode()


def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return csv_cell(value).replace("\n", " ")[:40]


def table_lines(
    rows: Sequence[Mapping[str, Any]], parameter_names: Sequence[str], names: Sequence[str]
) -> list[list[str]]:
    """The table as the CLI prints it (header first): name, parameters, state, duration, values, and
    the reason of a child that did not succeed."""
    header = ["NAME", *(p.upper() for p in parameter_names), "STATE", "DURATION", *names, "REASON"]
    out = [header]
    for row in rows:
        params = row.get("parameters") or {}
        vals = row.get("values") or {}
        state = str(row.get("state") or "-")
        why = "-"
        if state not in (RunState.SUCCEEDED, RunState.PENDING, RunState.RUNNING):
            why = f"{row.get('reason') or state}: {row.get('message') or ''}".rstrip(": ")[:80]
        out.append(
            [
                str(row.get("name")),
                *(_shown(params.get(p)) for p in parameter_names),
                state,
                str(row.get("duration") or "-"),
                *(_shown(vals.get(v)) for v in names),
                why,
            ]
        )
    return out
