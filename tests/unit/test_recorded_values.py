"""Recorded values read from an executed notebook as scrapbook writes them, bounded for a run's status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import nbformat
import pytest
from nbkube.run import values
from nbkube.run.values import MAX_NAME, MAX_STRING, MAX_VALUES, recorded_values, scrap_output


def notebook(*outputs_per_cell: list[dict[str, Any]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for outputs in outputs_per_cell:
        cell = nbformat.v4.new_code_cell("x")
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    return nb


def glued(calls: list[tuple[str, Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The outputs the real scrapbook.glue writes (its IPython display calls, captured)."""
    sb = pytest.importorskip("scrapbook")
    shown: list[dict[str, Any]] = []

    def display(data: dict[str, Any], metadata: dict[str, Any] | None = None, raw: bool = False) -> None:
        assert raw
        shown.append({"output_type": "display_data", "data": data, "metadata": metadata or {}})

    with mock.patch("IPython.display.display", display), pytest.warns(UserWarning, match="No kernel"):
        for name, value, kwargs in calls:
            sb.glue(name, value, **kwargs)
    return shown


def test_values_glued_by_scrapbook_are_read_with_their_types() -> None:
    outputs = glued(
        [
            ("accuracy", 0.93, {}),
            ("epochs", 12, {}),
            ("converged", True, {}),
            ("label", "baseline", {}),
            ("shown", 7, {"display": True}),
        ]
    )
    found = recorded_values(notebook(outputs[:2], outputs[2:]))
    assert found.values == {
        "accuracy": 0.93,
        "epochs": 12,
        "converged": True,
        "label": "baseline",
        "shown": 7,
    }
    assert (found.omitted, found.notes) == (0, [])


def test_the_package_free_output_is_what_scrapbook_writes_and_reads_back(tmp_path: Path) -> None:
    sb = pytest.importorskip("scrapbook")
    by_hand = scrap_output("accuracy", 0.5)
    assert glued([("accuracy", 0.5, {})]) == [by_hand]
    nb = notebook([by_hand, {"output_type": "stream", "name": "stdout", "text": "hi\n"}])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert sb.read_notebook(str(path)).scraps.data_dict == {"accuracy": 0.5}
    assert recorded_values(nb).values == {"accuracy": 0.5}


def test_a_later_record_of_a_name_replaces_its_value_and_papermill_records_are_read() -> None:
    legacy = {"output_type": "display_data", "data": {values.PAPERMILL_RECORD: {"loss": 0.1}}, "metadata": {}}
    found = recorded_values(
        notebook([scrap_output("a", 1), legacy], [scrap_output("a", 2), scrap_output("b", "x", "text")])
    )
    assert list(found.values.items()) == [("a", 2), ("loss", 0.1), ("b", "x")]


def test_a_json_string_is_parsed_as_scrapbook_does_and_text_stays_text() -> None:
    found = recorded_values(notebook([scrap_output("n", "42"), scrap_output("t", "42", "text")]))
    assert found.values == {"n": 42, "t": "42"}


def test_a_huge_string_is_cut_with_a_note() -> None:
    found = recorded_values(notebook([scrap_output("log", "x" * 5_000_000, "text")]))
    assert found.values == {"log": "x" * MAX_STRING}
    assert found.notes == [f"log: a string of 5000000 characters: cut to {MAX_STRING}"]


def test_values_that_are_not_scalars_are_left_out_with_a_note_and_counted() -> None:
    frame = scrap_output("df", "UEFSMQ==", "pandas")
    found = recorded_values(
        notebook(
            [
                scrap_output("curve", [1, 2, 3]),
                scrap_output("cfg", {"a": 1}),
                frame,
                scrap_output("ok", 1),
                scrap_output("bad", float("nan")),
                scrap_output("big", 2**80),
                scrap_output("none", None),
            ]
        )
    )
    assert found.values == {"ok": 1, "bad": "nan", "big": str(2**80)}
    assert found.omitted == 4
    assert found.notes == [
        "curve: a list is not a scalar: left out",
        "cfg: a dict is not a scalar: left out",
        "df: a value of encoder 'pandas' is not a scalar: left out",
        "bad: nan is not a JSON number: kept as a string",
        "big: an integer past 64 bits: kept as a string",
        "none: null is not kept: left out",
    ]
    json.dumps(found.values, allow_nan=False)  # what the API server gets is strict JSON


def test_names_past_the_limit_or_too_long_are_counted_not_kept() -> None:
    many = [scrap_output(f"v{i}", i) for i in range(MAX_VALUES + 5)]
    found = recorded_values(notebook(many, [scrap_output("n" * (MAX_NAME + 1), 1), scrap_output("v0", -1)]))
    assert len(found.values) == MAX_VALUES and found.values["v0"] == -1
    assert found.omitted == 6
    assert len(found.notes) == 2 and len(found.notes) <= values.MAX_NOTES


def test_malformed_outputs_are_ignored() -> None:
    nb = {
        "cells": [
            {"cell_type": "code", "outputs": [None, {"output_type": "display_data", "data": None}]},
            {
                "cell_type": "code",
                "outputs": [{"output_type": "display_data", "data": {values.scrap_mime(): 3}}],
            },
            "not a cell",
            {"cell_type": "code", "outputs": [{"output_type": "stream", "data": {values.scrap_mime(): {}}}]},
        ]
    }
    assert recorded_values(nb) == values.RecordedValues()
