"""Reading a file or a whole folder of a namespace's repository (a run's input files), bounded before any
content is read, and never from another namespace's repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbkube.results import ReadLimitExceeded, ResultsRepositories, RunRecord


def _run(name: str, namespace: str = "team") -> RunRecord:
    return RunRecord(
        namespace=namespace, name=name, uid=f"uid-{name}", notebook="analysis.ipynb", state="Succeeded"
    )


def _notebook(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print()", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb.cells.append(cell)
    return nb


@pytest.fixture
async def repositories(tmp_path: Path) -> Any:
    async with ResultsRepositories(tmp_path / "results", fsync=False) as r:
        await r.commit_run(_run("a"), _notebook("one\n"), {"big.jsonl": b"x" * 1000}, final=True)
        await r.commit_run(_run("a", namespace="other"), _notebook("other's\n"), final=True)
        yield r


async def test_a_file_is_read_by_its_name_and_a_folder_by_paths_below_it(
    repositories: ResultsRepositories,
) -> None:
    [(name, data)] = await repositories.read_files(
        "team", "team/a/analysis.ipynb", max_files=10, max_bytes=10**6
    )
    assert name == "analysis.ipynb" and "one" in data.decode()
    folder = await repositories.read_files("team", "team/a/", max_files=10, max_bytes=10**6)
    assert [p for p, _ in folder] == ["analysis.ipynb", "nbkube.json", "outputs/big.jsonl"]
    assert json.loads(dict(folder)["nbkube.json"])["uid"] == "uid-a"
    whole = await repositories.read_files("team", "team", max_files=10, max_bytes=10**6)
    assert [p for p, _ in whole] == ["a/analysis.ipynb", "a/nbkube.json", "a/outputs/big.jsonl"]


async def test_reads_past_the_bounds_are_refused_before_any_content_is_read(
    repositories: ResultsRepositories,
) -> None:
    with pytest.raises(ReadLimitExceeded, match="3 files"):
        await repositories.read_files("team", "team/a", max_files=2, max_bytes=10**6)
    with pytest.raises(ReadLimitExceeded, match="more than 2 files or 500 bytes"):
        await repositories.read_files("team", "team/a", max_files=2, max_bytes=500)


async def test_absent_paths_and_other_namespaces_are_not_found(repositories: ResultsRepositories) -> None:
    for namespace, path in (("team", "team/missing"), ("team", "other/a"), ("nobody", "nobody/a")):
        with pytest.raises(FileNotFoundError):
            await repositories.read_files(namespace, path, max_files=10, max_bytes=10**6)
    with pytest.raises(ValueError):
        await repositories.read_files("team", "team/../other", max_files=10, max_bytes=10**6)
