"""A session's notebook and the edits on it, by cell id (nbformat 4.5 ids).

Pure: no kernel, no git. Insert after a cell (or at the top), replace (a code cell's outputs and
execution count are cleared: its old outputs no longer describe its source), delete. An unknown id
is an `UnknownCell` error naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import nbformat
from nbformat import NotebookNode

from nbkube.engine import upgrade_notebook

CELL_TYPES = ("code", "markdown", "raw")
_CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # nbformat 4.5


class EditError(ValueError):
    """An edit that cannot apply to the notebook as it is; the notebook is unchanged."""


class UnknownCell(EditError):
    def __init__(self, cell_id: str) -> None:
        super().__init__(f"no cell with id {cell_id!r} in the notebook")
        self.cell_id = cell_id


class SessionDocument:
    def __init__(self, notebook: NotebookNode) -> None:
        self.notebook = upgrade_notebook(notebook)  # 4.5: every cell has a valid, unique id

    @property
    def cells(self) -> list[NotebookNode]:
        return list(self.notebook.cells)

    def ids(self) -> list[str]:
        return [str(cell["id"]) for cell in self.notebook.cells]

    def index_of(self, cell_id: str) -> int:
        for index, cell in enumerate(self.notebook.cells):
            if cell.get("id") == cell_id:
                return index
        raise UnknownCell(cell_id)

    def cell(self, cell_id: str) -> NotebookNode:
        return self.notebook.cells[self.index_of(cell_id)]

    def insert(
        self, source: str, *, after: str | None = None, cell_type: str = "code", cell_id: str | None = None
    ) -> str:
        """Inserts a cell after the cell `after` (None: at the top); its id."""
        at = 0 if after is None else self.index_of(after) + 1
        if cell_id is not None and not _CELL_ID.match(cell_id):
            raise EditError(f"cell id {cell_id!r}: 1 to 64 letters, digits, '-' or '_'")
        if cell_id is not None and cell_id in self.ids():
            raise EditError(f"a cell with id {cell_id!r} is in the notebook already")
        cell = _new_cell(cell_type, source)
        if cell_id is not None:
            cell["id"] = cell_id
        while cell["id"] in self.ids():  # a random id that collides: draw again
            cell["id"] = _new_cell(cell_type, "")["id"]
        self.notebook.cells.insert(at, cell)
        return str(cell["id"])

    def replace(self, cell_id: str, source: str, *, cell_type: str | None = None) -> None:
        """The cell's new source (and type); a code cell's outputs and execution count are cleared."""
        index = self.index_of(cell_id)
        old = self.notebook.cells[index]
        kind = cell_type or old["cell_type"]
        cell = _new_cell(kind, source)
        cell["id"] = cell_id
        cell["metadata"] = {k: v for k, v in old.get("metadata", {}).items() if k != "nbkube"}
        self.notebook.cells[index] = cell

    def delete(self, cell_id: str) -> None:
        del self.notebook.cells[self.index_of(cell_id)]

    def code_ids(self, cell_ids: Iterable[str] | None = None, *, start: str | None = None) -> list[str]:
        """The code cells to execute, in notebook order: those named (each must exist), or all from
        `start` on (all when None). A named markdown or raw cell is an EditError."""
        if cell_ids is not None:
            chosen = list(cell_ids)
            for cell_id in chosen:
                if self.cell(cell_id)["cell_type"] != "code":
                    raise EditError(f"cell {cell_id!r} is not a code cell")
            return chosen
        first = 0 if start is None else self.index_of(start)
        return [str(c["id"]) for c in self.notebook.cells[first:] if c["cell_type"] == "code"]


def _new_cell(cell_type: str, source: str) -> NotebookNode:
    if cell_type == "code":
        return nbformat.v4.new_code_cell(source)
    if cell_type == "markdown":
        return nbformat.v4.new_markdown_cell(source)
    if cell_type == "raw":
        return nbformat.v4.new_raw_cell(source)
    raise EditError(f"cell type {cell_type!r} is not one of {', '.join(CELL_TYPES)}")
