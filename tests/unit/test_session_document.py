"""A session's notebook edited by cell id, and an edit that is not committed is not made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbkube.api.sessionops import EditAction, EditRequest
from nbkube.kernelwork.failures import Failures
from nbkube.kernelwork.journal import WorkJournal
from nbkube.session.book import SessionBook
from nbkube.session.document import EditError, SessionDocument, UnknownCell
from nbkube.session.work import OperationError, SessionWork


def document() -> SessionDocument:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("x = 1", id="a"), nbformat.v4.new_markdown_cell("# t", id="b")]
    )
    executed = nb.cells[0]
    executed.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    executed.execution_count = 3
    return SessionDocument(nb)


def test_insert_replace_and_delete_go_by_id_and_replace_clears_a_code_cells_outputs() -> None:
    doc = document()
    top = doc.insert("import os")
    after = doc.insert("y = 2", after="a", cell_id="y")
    assert doc.ids() == [top, "a", "y", "b"] and after == "y"
    doc.replace("a", "x = 10")
    replaced = doc.cell("a")
    assert replaced.source == "x = 10" and replaced.outputs == [] and replaced.execution_count is None
    doc.delete("b")
    assert doc.ids() == [top, "a", "y"]
    assert doc.code_ids(start="a") == ["a", "y"]


def test_unknown_ids_duplicates_and_non_code_cells_are_clear_errors_that_change_nothing() -> None:
    doc = document()
    with pytest.raises(UnknownCell, match="'nope'"):
        doc.delete("nope")
    with pytest.raises(EditError, match="already"):
        doc.insert("z", cell_id="a")
    with pytest.raises(EditError, match="letters"):
        doc.insert("z", cell_id="no spaces")
    with pytest.raises(EditError, match="not a code cell"):
        doc.code_ids(["b"])
    assert doc.ids() == ["a", "b"]


class FailingStore:
    def __init__(self) -> None:
        self.calls = 0

    async def commit_files(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("disk full")
        return "c" * 40


async def test_an_edit_whose_commit_fails_is_not_made(tmp_path: Path) -> None:
    body = {
        "metadata": {"name": "s", "namespace": "team", "uid": "u1"},
        "status": {"branch": "sessions/s/u1"},
    }
    book = SessionBook(None, body, 60)  # type: ignore[arg-type]
    work = SessionWork(
        book=book,
        journal=WorkJournal(tmp_path, "u1"),
        store=FailingStore(),  # type: ignore[arg-type]
        failures=Failures("team/s"),
        document=document(),
        lease=None,  # type: ignore[arg-type]
        file_name="notebook.ipynb",
        execution_timeout=60,
    )
    with pytest.raises(RuntimeError, match="disk full"):
        await work.edit(EditRequest(action=EditAction.DELETE, cell_id="a"))
    assert work.document.ids() == ["a", "b"] and book.status.operations == 0
    result = await work.edit(EditRequest(action=EditAction.DELETE, cell_id="a"))
    assert work.document.ids() == ["b"] and result.head == "c" * 40 and book.status.operations == 1
    with pytest.raises(OperationError) as refused:
        await work.edit(EditRequest(action=EditAction.INSERT, source="1", expectHead="0" * 40))
    assert refused.value.status == 409
