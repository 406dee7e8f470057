"""Notebook files edited cell by cell, addressed by nbformat 4.5 cell ids.

Older notebooks are upgraded to 4.5 on load (nbformat generates the missing ids); every edit is
validated and written back atomically (a temporary file in the same directory, then a rename), so a
crash never leaves half a notebook. Cells an edit does not touch keep their outputs and metadata.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nbformat
from nbformat import NotebookNode

from nbkube.cli.errors import UsageError

CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")
CellType = Literal["code", "markdown", "raw"]


@dataclass
class Loaded:
    notebook: NotebookNode
    upgraded_from: str | None  # "4.2" when the file was older than 4.5 and got ids


def read_notebook(path: Path) -> Loaded:
    """Reads, validates and upgrades a notebook to nbformat 4.5; UsageError when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read: {exc}") from None
    return parse_notebook(text, str(path))


def parse_notebook(text: str, origin: str) -> Loaded:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{origin} is not a notebook: invalid JSON ({exc})") from None
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise UsageError(f"{origin} is not a notebook: no nbformat version")
    version = f"{raw.get('nbformat')}.{raw.get('nbformat_minor', 0)}"
    if raw.get("nbformat") == 4 and raw.get("nbformat_minor", 0) >= 5 and isinstance(raw.get("cells"), list):
        check_ids(raw["cells"], origin)  # before nbformat, which would silently rename duplicates
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as exc:  # nbformat raises many kinds of errors for malformed documents
        raise UsageError(f"{origin} is not a valid notebook: {_first_line(exc)}") from None
    upgraded_from = None
    if nb.get("nbformat_minor", 0) < 5:
        nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=nb.get("nbformat_minor", 0))
        upgraded_from = version
    elif raw.get("nbformat") != 4:
        upgraded_from = version
    check_ids(nb.cells, origin)
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise UsageError(f"{origin} fails nbformat validation: {_first_line(exc)}") from None
    return Loaded(nb, upgraded_from)


def check_ids(cells: list[Any], origin: str) -> None:
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        cell_id = cell.get("id") if isinstance(cell, dict) else None
        if not isinstance(cell_id, str) or not CELL_ID.match(cell_id):
            raise UsageError(f"{origin}: cell {index} has an invalid id {cell_id!r}")
        if cell_id in seen:
            raise UsageError(f"{origin}: cell id {cell_id!r} is used twice")
        seen.add(cell_id)


def write_notebook(nb: NotebookNode, path: Path) -> None:
    """Validates and writes atomically, keeping the file's permissions."""
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise UsageError(f"the edited notebook would be invalid: {_first_line(exc)}") from None
    text = nbformat.writes(nb)
    if not text.endswith("\n"):
        text += "\n"
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def index_of(nb: NotebookNode, cell_id: str) -> int:
    for index, cell in enumerate(nb.cells):
        if cell.get("id") == cell_id:
            return index
    ids = ", ".join(c.get("id", "?") for c in nb.cells[:20])
    more = ", ..." if len(nb.cells) > 20 else ""
    raise UsageError(f"no cell with id {cell_id!r} (ids: {ids}{more})")


def new_cell(
    cell_type: CellType, source: str, cell_id: str | None = None, tags: list[str] | None = None
) -> NotebookNode:
    make: Callable[..., NotebookNode] = {
        "code": nbformat.v4.new_code_cell,
        "markdown": nbformat.v4.new_markdown_cell,
        "raw": nbformat.v4.new_raw_cell,
    }[cell_type]
    cell = make(source=source)
    if cell_id is not None:
        if not CELL_ID.match(cell_id):
            raise UsageError(f"invalid cell id {cell_id!r}: 1-64 characters of a-z, A-Z, 0-9, - and _")
        cell["id"] = cell_id
    if tags:
        cell.metadata["tags"] = list(dict.fromkeys(tags))
    return cell


def insert_cell(
    nb: NotebookNode,
    cell: NotebookNode,
    *,
    before: str | None = None,
    after: str | None = None,
    at: int | None = None,
) -> int:
    """Inserts ``cell`` (its id must be new in ``nb``) and returns its index."""
    if sum(x is not None for x in (before, after, at)) != 1:
        raise UsageError("give exactly one of --before ID, --after ID, --at N")
    if any(c.get("id") == cell["id"] for c in nb.cells):
        raise UsageError(f"cell id {cell['id']!r} is already used in this notebook")
    if before is not None:
        index = index_of(nb, before)
    elif after is not None:
        index = index_of(nb, after) + 1
    else:
        assert at is not None
        if not -len(nb.cells) - 1 <= at <= len(nb.cells):
            raise UsageError(f"--at {at} is out of range: the notebook has {len(nb.cells)} cell(s)")
        index = at if at >= 0 else len(nb.cells) + 1 + at
    nb.cells.insert(index, cell)
    return index


def replace_source(nb: NotebookNode, cell_id: str, source: str) -> NotebookNode:
    """Replaces a cell's source; a code cell's outputs go too, since they no longer match it."""
    cell = nb.cells[index_of(nb, cell_id)]
    cell.source = source
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    return cell


def delete_cell(nb: NotebookNode, cell_id: str) -> NotebookNode:
    return nb.cells.pop(index_of(nb, cell_id))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__
