"""papermill-compatible parameter injection (Python kernels), without papermill at runtime.

The injected cell's source is exactly what papermill 2.x produces when black is not installed:
`# Parameters` then one `name = value` line per parameter, values translated as papermill's
PythonTranslator does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import nbformat
from nbformat import NotebookNode

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
PYTHON_KERNELS = ("python", "python3", "python2")


class UnsupportedLanguage(ValueError):
    """No parameter translation for this kernel/language (only Python is supported)."""


def _escaped_str(value: Any) -> str:
    if isinstance(value, str):
        value = value.encode("unicode_escape").decode("utf-8").replace('"', r"\"")
    return f'"{value}"'


def translate(value: Any) -> str:
    """A Python expression for value, as papermill writes it."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return _escaped_str(value)
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return str(value)
        if math.isnan(value):
            return "float('nan')"
        return "float('-inf')" if value < 0 else "float('inf')"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_escaped_str(k)}: {translate(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(translate(v) for v in value) + "]"
    return _escaped_str(value)


def parameters_source(parameters: Mapping[str, Any], comment: str = "Parameters") -> str:
    lines = [f"# {comment}".strip()]
    lines += [f"{name} = {translate(value)}" for name, value in parameters.items()]
    return "\n".join(lines) + "\n"


def _language(nb: NotebookNode, kernel_name: str | None, language: str | None) -> str:
    kernel_name = kernel_name or nb.metadata.get("kernelspec", {}).get("name")
    language = (
        language
        or nb.metadata.get("language_info", {}).get("name")
        or nb.metadata.get("kernelspec", {}).get("language")
    )
    if (kernel_name or "").lower() in PYTHON_KERNELS or (language or "").lower() == "python":
        return "python"
    raise UnsupportedLanguage(f"no parameter translation for kernel {kernel_name!r} / language {language!r}")


def _first_tagged(nb: NotebookNode, tag: str) -> int:
    for index, cell in enumerate(nb.cells):
        if tag in cell.get("metadata", {}).get("tags", []):
            return index
    return -1


def inject_parameters(
    nb: NotebookNode,
    parameters: Mapping[str, Any],
    *,
    kernel_name: str | None = None,
    language: str | None = None,
    comment: str = "Parameters",
) -> NotebookNode:
    """Insert the `injected-parameters` cell as papermill does, in place, and return the notebook:
    replacing a previous injected cell, else right after the cell tagged `parameters`, else at the
    top. The notebook is upgraded to nbformat 4.5 first; parameters are recorded in
    metadata.papermill.parameters as papermill does."""
    _language(nb, kernel_name, language)
    from nbkube.engine.executor import upgrade_notebook

    nb = upgrade_notebook(nb)
    cell = nbformat.v4.new_code_cell(source=parameters_source(parameters, comment))
    cell.metadata["tags"] = [INJECTED_TAG]
    injected = _first_tagged(nb, INJECTED_TAG)
    if injected >= 0:
        nb.cells[injected] = cell
    else:
        nb.cells.insert(_first_tagged(nb, PARAMETERS_TAG) + 1, cell)
    nb.metadata.setdefault("papermill", {})["parameters"] = dict(parameters)
    return nb
