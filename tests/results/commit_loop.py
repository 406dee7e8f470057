"""Test helper: commits checkpoints and final results in a loop until it is killed.

    python commit_loop.py <repo> <first-run-index> [store|repositories]

With `repositories`, <repo> is the root of a ResultsRepositories (namespace default: <repo>/default.git).
Prints "ready" once the store is open, then "final <i> <commit>" after each final result landed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import nbformat
from nbkube.results import ResultsRepositories, ResultsStore, RunRecord


def run_record(i: int, final: bool) -> RunRecord:
    return RunRecord(
        namespace="default",
        name=f"loop-{i}",
        uid=f"loop-uid-{i}",
        notebook="loop.ipynb",
        state="Succeeded" if final else "Running",
    )


def notebook(i: int) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"x = {i}", execution_count=1)])


async def main(root: Path, first: int, kind: str) -> None:
    opened = (
        ResultsRepositories(root, fsync=False) if kind == "repositories" else ResultsStore(root, fsync=False)
    )
    async with opened as store:
        print("ready", flush=True)
        i = first
        while True:
            await store.commit_run(run_record(i, False), notebook(i), {"part.txt": b"p" * 2000}, final=False)
            info = await store.commit_run(
                run_record(i, True), notebook(i), {"out.txt": b"o" * 4000}, final=True
            )
            print(f"final {i} {info.commit}", flush=True)
            i += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "store"))
