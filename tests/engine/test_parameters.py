"""Parameter injection must produce exactly what papermill produces (papermill is a dev dependency only)."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from nbkube.engine import UnsupportedLanguage, inject_parameters, parameters_source
from papermill.parameterize import parameterize_notebook

PAPERMILL_NOTEBOOKS = Path(papermill.__file__).parent / "tests" / "notebooks"
NOTEBOOKS = [
    "simple_execute.ipynb",
    "complex_parameters.ipynb",
    "no_parameters.ipynb",
    "nb_version_4.4.ipynb",
    "report_mode_test.ipynb",
    "result_no_exec.ipynb",
]
PARAMETER_SETS = [
    {"msg": "hello"},
    {"a": 1, "b": -2.5, "c": True, "d": None, "e": False, "f": 0},
    {"text": "quote \" and \\ backslash\nnew line, tab\t, unicode é ☃, single '"},
    {"items": [1, "two", 3.0, None, [True, {"k": "v"}]], "mapping": {"x": 1, "y": [1, 2], "z": {"n": None}}},
    {"big": 10**30, "tiny": 1e-12, "nan": float("nan"), "inf": float("inf"), "ninf": float("-inf")},
    {"int_keys": {1: "one", 2.5: "float key"}, "empty_list": [], "empty_dict": {}, "empty": ""},
]


def papermill_result(nb: nbformat.NotebookNode, parameters: dict) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    # what papermill.iorw.load_notebook_node does before parameterizing
    nb.metadata.setdefault("papermill", {})
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])
    return parameterize_notebook(nb, parameters)


def shape(nb: nbformat.NotebookNode) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.fixture(autouse=True)
def _no_black(monkeypatch: pytest.MonkeyPatch) -> None:
    # papermill reformats with black when black is importable; our contract is the unformatted text.
    monkeypatch.setitem(sys.modules, "black", None)


@pytest.mark.parametrize("name", NOTEBOOKS)
@pytest.mark.parametrize("parameters", PARAMETER_SETS, ids=lambda p: "-".join(p))
def test_injected_cell_equals_papermills(name: str, parameters: dict) -> None:
    nb = nbformat.read(PAPERMILL_NOTEBOOKS / name, as_version=4)
    expected = papermill_result(nb, parameters)
    ours = inject_parameters(copy.deepcopy(nb), parameters)
    assert shape(ours) == shape(expected)
    assert ours.metadata.papermill["parameters"] == parameters
    assert ours.nbformat_minor == 5 and all(c.get("id") for c in ours.cells)
    nbformat.validate(ours)


@pytest.mark.parametrize("name", ["simple_execute.ipynb", "no_parameters.ipynb"])
def test_reinjecting_replaces_the_injected_cell_like_papermill(name: str) -> None:
    nb = nbformat.read(PAPERMILL_NOTEBOOKS / name, as_version=4)
    once_ours = inject_parameters(copy.deepcopy(nb), {"a": 1})
    once_theirs = papermill_result(nb, {"a": 1})
    twice_ours = inject_parameters(once_ours, {"a": 2, "b": "x"})
    twice_theirs = papermill_result(once_theirs, {"a": 2, "b": "x"})
    assert shape(twice_ours) == shape(twice_theirs)
    assert sum("injected-parameters" in tags for _, _, tags in shape(twice_ours)) == 1


def test_values_evaluate_back_to_themselves() -> None:
    parameters = PARAMETER_SETS[3] | PARAMETER_SETS[2] | {"f": 2.5, "n": None, "t": True}
    namespace: dict = {}
    exec(parameters_source(parameters), namespace)
    assert {k: namespace[k] for k in parameters} == parameters


def test_non_python_kernels_are_refused() -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "ir", "language": "R"}
    with pytest.raises(UnsupportedLanguage):
        inject_parameters(nb, {"a": 1})
