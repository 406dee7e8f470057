"""A sweep's table from its children (pure): rows, the bounded status copy, summary.csv and the plot."""

from __future__ import annotations

import csv
import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from nbkube.cli import sweeps
from nbkube.cli.errors import UsageError
from nbkube.run import sweeptable


def child(state: str, values: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "status": {
            "state": state,
            "reason": {"Succeeded": "Succeeded", "Failed": "CellError"}.get(state, state),
            "startTime": "2026-12-01T10:00:00Z",
            "completionTime": "2026-12-01T10:00:07Z" if state in ("Succeeded", "Failed") else None,
            "duration": "7s",
            "values": values or {},
            **status,
        }
    }


NAMES = ["sw-0-a", "sw-1-b", "sw-2-c"]
COMBOS = [{"alpha": 1, "seed": 1}, {"alpha": 2, "seed": 1}, {"alpha": 3, "seed": 1}]


def rows() -> list[sweeptable.Row]:
    existing = {
        "sw-0-a": child("Succeeded", {"accuracy": 0.5, "note": 'ok, "quoted"\nline'}),
        "sw-1-b": child("Failed", {"accuracy": 0.25}, message="cell 2 (fit) failed: ValueError: bad"),
    }
    return sweeptable.rows_of(NAMES, COMBOS, existing)


def test_every_child_has_a_row_a_failed_one_with_its_reason_and_one_not_created_pending() -> None:
    table = rows()
    assert [r["state"] for r in table] == ["Succeeded", "Failed", "Pending"]
    assert table[1]["reason"] == "CellError"
    assert table[1]["message"] == "cell 2 (fit) failed: ValueError: bad"
    assert table[0]["message"] is None and table[2]["reason"] is None
    assert [r["seconds"] for r in table] == [7, 7, None]
    assert [r["parameters"] for r in table] == COMBOS
    assert sweeptable.value_names(table) == ["accuracy", "note"]


def test_summary_csv_reads_back_to_the_rows() -> None:
    table = rows()
    data = sweeptable.csv_bytes(table, ["alpha", "seed"], sweeptable.value_names(table))
    read = list(csv.DictReader(io.StringIO(data.decode())))
    assert list(read[0]) == [
        "name",
        "index",
        "alpha",
        "seed",
        "state",
        "reason",
        "seconds",
        "accuracy",
        "note",
        "message",
    ]
    assert read[0]["note"] == 'ok, "quoted"\nline' and float(read[0]["accuracy"]) == 0.5
    assert read[1]["reason"] == "CellError" and read[1]["message"].startswith("cell 2 (fit) failed")
    assert read[2] == {**read[2], "state": "Pending", "accuracy": "", "seconds": ""}


def test_a_value_named_like_a_column_gets_its_own_header() -> None:
    cols = [h for h, _, _ in sweeptable.columns(["alpha"], ["alpha", "state", "loss"])]
    assert cols == [
        "name",
        "index",
        "alpha",
        "state",
        "reason",
        "seconds",
        "alpha.value",
        "state.value",
        "loss",
        "message",
    ]


def test_the_status_copy_is_bounded_and_says_how_many_rows_it_left_out() -> None:
    names = [f"c{i}" for i in range(256)]
    combos = [{"label": "p" * 1000, "i": i} for i in range(256)]
    many = {f"v{j}": "x" * 200 for j in range(40)}
    existing = {n: child("Succeeded", many) for n in names}
    table = sweeptable.rows_of(names, combos, existing)
    kept, omitted = sweeptable.status_rows(table, sweeptable.value_names(table))
    assert omitted > 0 and len(kept) + omitted == 256
    assert sum(len(json.dumps(r.to_api())) for r in kept) <= sweeptable.STATUS_TABLE_BYTES
    assert len(kept[0].values) == sweeptable.MAX_COLUMNS
    assert kept[0].parameters["label"] == "p" * sweeptable.TABLE_STRING
    assert table[0]["values"] == many  # the whole row (summary.json) keeps everything


def test_the_cli_table_shows_parameters_values_and_a_failed_childs_reason() -> None:
    table = rows()
    text = sweeps.format_table(sweeptable.table_lines(table, ["alpha", "seed"], ["accuracy"]))
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "ALPHA", "SEED", "STATE", "DURATION", "accuracy", "REASON"]
    assert lines[1].split() == ["sw-0-a", "1", "1", "Succeeded", "7s", "0.5", "-"]
    assert lines[2].split()[:6] == ["sw-1-b", "2", "1", "Failed", "7s", "0.25"]
    assert "CellError: cell 2 (fit) failed: ValueError: bad" in lines[2]
    assert lines[3].split() == ["sw-2-c", "3", "1", "Pending", "-", "-", "-"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_plot_is_a_png_of_the_fixed_size_with_a_line_per_group(tmp_path: Path) -> None:
    doc = {
        "parameterNames": ["alpha", "seed"],
        "valueNames": ["accuracy"],
        "rows": [
            {"parameters": {"alpha": a, "seed": s}, "values": {"accuracy": a * s / 10}, "state": "Succeeded"}
            for a in (3, 1, 2)
            for s in (1, 2)
        ]
        + [{"parameters": {"alpha": 4, "seed": 1}, "values": {}, "state": "Failed"}],
    }
    table = sweeps.SweepTable("sw", "Succeeded", doc)
    groups, numeric = sweeps.series(table, sweeps.parse_plot("x=alpha,y=accuracy,by=seed"))
    assert numeric and set(groups) == {"seed=1", "seed=2"}
    assert groups["seed=2"] == [(1, 0.2), (2, 0.4), (3, 0.6)]
    out = tmp_path / "sweep.png"
    assert sweeps.draw(table, sweeps.parse_plot("x=alpha,y=accuracy,by=seed"), out) == 6
    assert png_size(out) == sweeps.PLOT_SIZE


@pytest.mark.parametrize("spec", ["x=alpha", "y=a", "x=a,y=b,z=c", "x=a,x=b,y=c", "alpha,accuracy", "x=,y=b"])
def test_a_bad_plot_spec_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="--plot"):
        sweeps.parse_plot(spec)


def test_plotting_a_name_the_sweep_does_not_have_says_what_it_has() -> None:
    table = sweeps.SweepTable(
        "sw", "Succeeded", {"parameterNames": ["alpha"], "valueNames": ["acc"], "rows": []}
    )
    with pytest.raises(UsageError, match=r"'loss' is neither.*parameters: alpha; values: acc"):
        sweeps.series(table, sweeps.parse_plot("x=alpha,y=loss"))
