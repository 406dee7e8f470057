"""Fixtures for the results repository tests: a real git repository in a temporary directory."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import nbformat
import pytest
from nbkube.results import ResultsStore, RunRecord


def git(root: Path, *args: str, input: str | None = None) -> str:
    """Stock git, as a user would run it, against the store's repository."""
    return subprocess.run(
        ["git", "--git-dir", str(root), *args], check=True, capture_output=True, text=True, input=input
    ).stdout


def executed_notebook(n_cells: int = 3) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for i in range(n_cells):
        cell = nbformat.v4.new_code_cell(f"print({i})", execution_count=i + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{i}\n")]
        cell.metadata["execution"] = {"iopub.execute_input": "2024-01-01T00:00:00Z"}
        nb.cells.append(cell)
    return nb


def record(i: int = 1, *, namespace: str = "default", state: str = "Succeeded", **kw: object) -> RunRecord:
    return RunRecord(
        namespace=namespace,
        name=f"analysis-{i}",
        uid=f"0000-uid-{i}",
        notebook="analysis.ipynb",
        environment="py",
        parameters={"alpha": 0.3, "i": i},
        state=state,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ResultsStore]:
    async with ResultsStore(tmp_path / "results", fsync=False) as s:
        yield s
