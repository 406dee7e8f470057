"""How `nbkube logs` prints the operator's events (the stream itself is tested on the cluster)."""

from __future__ import annotations

import io

from nbkube.cli.logs import LogPrinter, format_output

RED_TRACEBACK = [
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)",
    "Cell \x1b[0;32mIn[1], line 1\x1b[0m\n"
    "\x1b[0;32m----> 1\x1b[0m \x1b[38;5;241m1\x1b[39m\x1b[38;5;241m/\x1b[39m0",
    "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
]
ERROR = {
    "output_type": "error",
    "ename": "ZeroDivisionError",
    "evalue": "division by zero",
    "traceback": RED_TRACEBACK,
}


def test_error_traceback_loses_ansi_off_a_terminal_and_keeps_it_on_one() -> None:
    plain = format_output(ERROR, color=False)
    assert "\x1b[" not in plain
    assert plain.rstrip().splitlines()[-1] == "ZeroDivisionError: division by zero"
    assert "----> 1 1/0" in plain
    colored = format_output(ERROR, color=True)
    assert "\x1b[0;31mZeroDivisionError" in colored


def test_error_without_traceback_prints_name_and_value() -> None:
    out = format_output(
        {"output_type": "error", "ename": "KeyError", "evalue": "'x'", "traceback": []}, False
    )
    assert out == "KeyError: 'x'\n"


def test_rich_outputs_print_text_plain_or_a_marker() -> None:
    figure = {"output_type": "display_data", "data": {"image/png": "iVBOR...", "text/plain": "<Figure>"}}
    assert format_output(figure, False) == "[image/png]\n"
    result = {"output_type": "execute_result", "data": {"text/plain": "0.6"}, "execution_count": 3}
    assert format_output(result, False) == "0.6\n"
    html = {"output_type": "display_data", "data": {"text/html": "<b>x</b>"}}
    assert format_output(html, False) == "[text/html]\n"
    assert format_output({"output_type": "stream", "name": "stdout", "text": ["a\n", "b"]}, False) == "a\nb"


def test_events_become_a_header_per_cell_outputs_and_an_end_line() -> None:
    out = io.StringIO()
    printer = LogPrinter(out, color=False, cell_id={1: "params", 2: "show"}.get)
    for event in [
        {"event": "cellStarted", "index": 1},
        {"event": "cellFinished", "index": 1, "state": "succeeded", "executionCount": 1},
        {"event": "cellStarted", "index": 2},
        {
            "event": "output",
            "index": 2,
            "output": {"output_type": "stream", "name": "stdout", "text": "tick"},
        },
        {
            "event": "output",
            "index": 2,
            "output": {"output_type": "stream", "name": "stdout", "text": " 1\n"},
        },
        {"event": "retry", "attempt": 2},
        {"event": "output", "index": 3, "output": ERROR},
        {"event": "cellFinished", "index": 3, "state": "failed", "executionCount": 1},
        {"event": "end", "state": "Failed", "reason": "CellError"},
    ]:
        printer.handle(event)
    lines = out.getvalue().splitlines()
    assert lines[:4] == [
        "── cell 1 (params) ──",
        "── cell 2 (show) ──",
        "tick 1",
        "── retrying: attempt 2 ──",
    ]
    assert lines[4] == "── cell 3 ──"
    assert lines[-3:] == [
        "ZeroDivisionError: division by zero",
        "── cell 3: failed ──",
        "── run Failed (CellError) ──",
    ]


def test_progress_redraws_one_line_on_a_terminal_and_prints_changes_otherwise() -> None:
    from nbkube.cli.progress import Progress

    def run(state: str, done: int, cells: list[dict[str, object]] | None = None) -> dict[str, object]:
        return {"status": {"state": state, "cellsDone": done, "cellsTotal": 4, "cells": cells or []}}

    updates = [
        run("Running", 1, [{"index": 1, "id": "fit", "state": "running"}]),
        run("Running", 1, [{"index": 1, "id": "fit", "state": "running"}]),
        run("Succeeded", 4),
    ]
    tty = io.StringIO()
    bar = Progress("r", tty, tty=True)
    for update in updates:
        bar.update(update)
    bar.close()
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("\n")
    assert "r [######------------------] 1/4  Running: cell 1 (fit)" in tty.getvalue()
    assert "\rr [########################] 4/4  Succeeded" in tty.getvalue()
    plain = io.StringIO()
    lines = Progress("r", plain, tty=False)
    for update in updates:
        lines.update(update)
    lines.close()
    assert plain.getvalue().splitlines() == ["r: 1/4 Running: cell 1 (fit)", "r: 4/4 Succeeded"]
