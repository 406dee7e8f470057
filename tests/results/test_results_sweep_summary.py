"""A run without a notebook of its own (a sweep's parent) commits its files beside its nbkube.json."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
from nbkube.results import ResultsStore, RunRecord


def parent(**kw: object) -> RunRecord:
    fields: dict[str, object] = {
        "namespace": "default",
        "name": "sweep",
        "uid": "0000-uid-sweep",
        "notebook": "sweep.ipynb",
        "environment": "py",
        "state": "Succeeded",
        "reason": "Succeeded",
        "result_file": "summary.json",
    }
    return RunRecord(**{**fields, **kw})  # type: ignore[arg-type]


async def test_the_files_land_in_the_runs_directory_named_by_its_result_path_once(
    store: ResultsStore,
) -> None:
    files = {"summary.csv": b"name,alpha\nsweep-0,1\n", "summary.json": b'{"rows": []}\n'}
    info = await store.commit_files_of_run(parent(), files)
    assert info.path == "default/sweep/summary.json"
    assert await store.read_file("default/sweep/summary.csv", info.commit) == files["summary.csv"]
    run = json.loads(await store.read_file("default/sweep/nbkube.json", info.commit))
    assert (run["path"], run["final"], run["state"]) == ("default/sweep/summary.json", True, "Succeeded")
    with pytest.raises(FileNotFoundError):
        await store.read_file("default/sweep/sweep.ipynb", info.commit)
    assert await store.find_final("0000-uid-sweep") == info
    again = await store.commit_files_of_run(parent(), {"summary.csv": b"other\n"})
    assert again == info and store.head == info.commit
    git_log = ["git", "--git-dir", str(store.git_dir), "log", "-1", "--format=%B"]
    message = (await asyncio.to_thread(subprocess.run, git_log, capture_output=True, text=True)).stdout
    assert "Nbkube-Path: default/sweep/summary.json" in message
    [summary] = await store.list_runs("default")
    assert summary.path == "default/sweep/summary.json"


@pytest.mark.parametrize("name", ["nbkube.json", "outputs", "../x", "a/b", ".hidden"])
async def test_a_file_name_the_directory_keeps_or_cannot_hold_is_refused(
    store: ResultsStore, name: str
) -> None:
    with pytest.raises(ValueError):
        await store.commit_files_of_run(parent(), {name: b"x"})
    assert store.head is None
