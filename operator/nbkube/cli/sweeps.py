"""`nbkube sweep SWEEP [--format table|csv|json] [--plot x=A,y=B[,by=C] -o FILE]`: a sweep's table.

The table is the parent's `status.sweep.rows` (live while the sweep runs); when the status had to
leave rows out, the whole table is read from the summary.json the sweep committed. `--plot` draws
it with matplotlib (the optional extra `nbkube[plot]`).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nbkube.cli.errors import EXIT_OK, CliError, UsageError
from nbkube.cli.fetch import write_atomically
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options, run_state
from nbkube.cli.tables import format_table
from nbkube.cli.userapi import UserApi, UserApiError
from nbkube.run import sweeptable
from nbkube.userapi import paths

PLOT_SIZE = (800, 500)
"""The plot's size in pixels."""
_DPI = 100


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="a sweep's table of child runs (parameters, state, recorded values), or its plot",
        description="Prints a sweep's table: per child run its parameters, state, duration and the values "
        "its notebook recorded (scrapbook's glue). --plot draws one recorded value against a parameter.",
    )
    parser.add_argument("sweep", metavar="SWEEP")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument(
        "--plot",
        metavar="x=NAME,y=NAME[,by=NAME]",
        help="draw y against x (parameters or recorded values), one line per value of `by`",
    )
    parser.add_argument("-o", "--output", help="where --plot writes its PNG (default: SWEEP.png)")
    add_cluster_options(parser)
    parser.set_defaults(handler=cmd_sweep)


class SweepTable:
    """A sweep's table as the CLI shows it: its parameter and value columns and its rows."""

    def __init__(self, name: str, state: str, doc: Mapping[str, Any]) -> None:
        self.name = name
        self.state = state
        self.parameter_names: list[str] = list(doc.get("parameterNames") or [])
        self.value_names: list[str] = list(doc.get("valueNames") or [])
        self.rows: list[dict[str, Any]] = [dict(r) for r in doc.get("rows") or []]
        self.omitted = int(doc.get("rowsOmitted") or 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "sweep": self.name,
            "state": self.state,
            "parameterNames": self.parameter_names,
            "valueNames": self.value_names,
            "rows": self.rows,
            **({"rowsOmitted": self.omitted} if self.omitted else {}),
        }

    def text(self) -> str:
        lines = format_table(sweeptable.table_lines(self.rows, self.parameter_names, self.value_names))
        if self.omitted:
            lines += f"\n({self.omitted} more row(s) not in the status; the sweep's summary.csv has them all)"
        return lines


def sweep_table(run: dict[str, Any]) -> SweepTable | None:
    """The table in a run's status; None unless the run is a sweep."""
    sweep = (run.get("status") or {}).get("sweep")
    if not sweep:
        return None
    return SweepTable(run["metadata"]["name"], run_state(run), sweep)


def _whole_table(kube: ClusterClient, run: dict[str, Any], table: SweepTable) -> SweepTable:
    """The table from the committed summary.json when the status left rows out (and it exists)."""
    result = (run.get("status") or {}).get("result") or {}
    if not table.omitted or not result.get("path") or not result.get("commit"):
        return table
    try:
        data, _ = UserApi(kube).get(
            paths.file_path(kube.namespace, result["path"]), {"ref": result["commit"]}
        )
        doc = json.loads(data)
    except (UserApiError, ValueError) as exc:
        print(f"nbkube: the whole table could not be read ({exc}); showing the status' rows", file=sys.stderr)
        return table
    return SweepTable(table.name, table.state, doc)


def cmd_sweep(args: argparse.Namespace) -> int:
    plot = parse_plot(args.plot) if args.plot else None
    if args.output and plot is None:
        raise UsageError("-o/--output is where --plot writes its PNG: give --plot too")
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        run = kube.find_run(args.sweep)
        table = sweep_table(run)
        if table is None:
            raise CliError(
                f"{args.sweep} is not a sweep (it has no spec.matrix): `nbkube describe {args.sweep}`"
            )
        table = _whole_table(kube, run, table)
    finally:
        kube.close()
    if plot is not None:
        target = Path(args.output or f"{args.sweep}.png")
        points = draw(table, plot, target)
        print(f"wrote {target} ({points} point(s) of {plot['y']} against {plot['x']})")
        return EXIT_OK
    if args.format == "json":
        print(json.dumps(table.as_json(), indent=1))
    elif args.format == "csv":
        sys.stdout.write(sweeptable.csv_bytes(table.rows, table.parameter_names, table.value_names).decode())
    else:
        print(table.text())
    return EXIT_OK


def parse_plot(spec: str) -> dict[str, str]:
    """`x=alpha,y=accuracy[,by=seed]` as a dict; UsageError for anything else."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or key not in ("x", "y", "by") or not value or key in out:
            raise UsageError(f"--plot takes x=NAME,y=NAME[,by=NAME], not {spec!r}")
        out[key] = value
    if "x" not in out or "y" not in out:
        raise UsageError(f"--plot needs x= and y=, not {spec!r}")
    return out


def _lookup(row: Mapping[str, Any], name: str) -> Any:
    params = row.get("parameters") or {}
    if name in params:
        return params[name]
    return (row.get("values") or {}).get(name)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def series(table: SweepTable, plot: Mapping[str, str]) -> tuple[dict[str, list[tuple[Any, float]]], bool]:
    """The points to draw, by group (one group "" without `by`), sorted by x; and whether x is numeric.
    A row without a numeric y (a failed child, a value not recorded) is left out."""
    x, y, by = plot["x"], plot["y"], plot.get("by")
    known = {*table.parameter_names, *table.value_names}
    for name in filter(None, (x, y, by)):
        if name not in known:
            raise UsageError(
                f"--plot: {name!r} is neither a parameter nor a recorded value of {table.name} "
                f"(parameters: {', '.join(table.parameter_names) or '-'}; values: "
                f"{', '.join(table.value_names) or '-'})"
            )
    groups: dict[str, list[tuple[Any, float]]] = {}
    for row in table.rows:
        xv, yv = _lookup(row, x), _number(_lookup(row, y))
        if xv is None or yv is None:
            continue
        group = f"{by}={_lookup(row, by)}" if by else ""
        groups.setdefault(group, []).append((xv, yv))
    numeric = all(_number(xv) is not None for points in groups.values() for xv, _ in points)
    for points in groups.values():
        if numeric:
            points.sort(key=lambda p: _number(p[0]) or 0.0)
        else:
            points.sort(key=lambda p: str(p[0]))
    return groups, numeric


def draw(table: SweepTable, plot: Mapping[str, str], target: Path) -> int:
    """Draws the plot as a PNG of PLOT_SIZE pixels at `target`; the number of points drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise CliError("--plot needs matplotlib: pip install 'nbkube[plot]'") from None
    groups, numeric = series(table, plot)
    count = sum(len(points) for points in groups.values())
    if not count:
        raise CliError(f"{table.name}: no child run has a numeric {plot['y']!r} to plot yet")
    fig = Figure(figsize=(PLOT_SIZE[0] / _DPI, PLOT_SIZE[1] / _DPI), dpi=_DPI)
    ax = fig.subplots()
    categories: list[str] = sorted({str(xv) for pts in groups.values() for xv, _ in pts})
    for group, points in sorted(groups.items()):
        xs: Sequence[Any] = (
            [_number(xv) for xv, _ in points] if numeric else [categories.index(str(xv)) for xv, _ in points]
        )
        ax.plot(xs, [yv for _, yv in points], marker="o", label=group or None)
    if not numeric:
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(plot["x"])
    ax.set_ylabel(plot["y"])
    ax.set_title(f"{table.name}: {plot['y']} by {plot['x']}")
    ax.grid(True, alpha=0.3)
    if plot.get("by"):
        ax.legend()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    write_atomically(target, buffer.getvalue())
    return count
