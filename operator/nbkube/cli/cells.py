"""`nbkube cells list|insert|replace|delete`: cell-level edits of a local notebook, by cell id."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nbkube.cli.errors import UsageError
from nbkube.cli.tables import format_table

if TYPE_CHECKING:
    from nbkube.cli.notebooks import Loaded

# nbkube.cli.notebooks (nbformat, jsonschema) is imported by the commands that need it: it costs
# seconds of start-up that `nbkube --help` and the cluster commands should not pay.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cells = subparsers.add_parser(
        "cells",
        help="list, insert, replace or delete cells of a local notebook by cell id",
        description="Edit a notebook by nbformat 4.5 cell ids. Older notebooks are upgraded (ids "
        "generated); the file is validated and written back atomically; untouched cells keep their outputs.",
    )
    actions = cells.add_subparsers(dest="cells_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="index, id, type, tags and first line of every cell")
    listing.add_argument("notebook", type=Path, metavar="NOTEBOOK.ipynb")
    listing.set_defaults(handler=cmd_list)

    insert = actions.add_parser("insert", help="insert a new cell")
    insert.add_argument("notebook", type=Path, metavar="NOTEBOOK.ipynb")
    where = insert.add_mutually_exclusive_group(required=True)
    where.add_argument("--before", metavar="ID", help="insert before the cell with this id")
    where.add_argument("--after", metavar="ID", help="insert after the cell with this id")
    where.add_argument("--at", metavar="N", type=int, help="insert at index N (0 first; -1 appends)")
    kind = insert.add_mutually_exclusive_group()
    kind.add_argument("--markdown", dest="cell_type", action="store_const", const="markdown")
    kind.add_argument("--raw", dest="cell_type", action="store_const", const="raw")
    _add_source(insert)
    insert.add_argument("--id", dest="cell_id", help="the new cell's id (default: generated)")
    insert.add_argument("--tag", dest="tags", action="append", default=[], help="a tag (repeatable)")
    insert.set_defaults(handler=cmd_insert, cell_type="code")

    replace = actions.add_parser(
        "replace", help="replace a cell's source (a code cell's outputs are cleared)"
    )
    replace.add_argument("notebook", type=Path, metavar="NOTEBOOK.ipynb")
    replace.add_argument("cell_id", metavar="ID")
    _add_source(replace)
    replace.set_defaults(handler=cmd_replace)

    delete = actions.add_parser("delete", help="delete a cell")
    delete.add_argument("notebook", type=Path, metavar="NOTEBOOK.ipynb")
    delete.add_argument("cell_id", metavar="ID")
    delete.set_defaults(handler=cmd_delete)


def _add_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--source", help="the cell's source text")
    source.add_argument("--file", type=Path, help="read the source from this file ('-' for stdin)")


def _source(args: argparse.Namespace) -> str:
    if args.source is not None:
        return str(args.source)
    if str(args.file) == "-":
        return sys.stdin.read()
    try:
        return Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {args.file}: {exc}") from None


def _load(path: Path) -> Loaded:
    from nbkube.cli import notebooks

    loaded = notebooks.read_notebook(path)
    if loaded.upgraded_from:
        print(
            f"{path}: upgraded from nbformat {loaded.upgraded_from} to 4.5 (cell ids added)", file=sys.stderr
        )
    return loaded


def cmd_list(args: argparse.Namespace) -> int:
    from nbkube.cli import notebooks

    nb = notebooks.read_notebook(args.notebook).notebook
    rows = [["INDEX", "ID", "TYPE", "TAGS", "OUTPUTS", "SOURCE"]]
    for index, cell in enumerate(nb.cells):
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        rows.append(
            [
                str(index),
                cell.id,
                cell.cell_type,
                ",".join(cell.metadata.get("tags", [])) or "-",
                str(len(cell.get("outputs", []))) if cell.cell_type == "code" else "-",
                first[:60] + ("…" if len(first) > 60 else ""),
            ]
        )
    print(format_table(rows))
    return 0


def cmd_insert(args: argparse.Namespace) -> int:
    from nbkube.cli import notebooks

    loaded = _load(args.notebook)
    cell = notebooks.new_cell(args.cell_type, _source(args), args.cell_id, args.tags)
    index = notebooks.insert_cell(loaded.notebook, cell, before=args.before, after=args.after, at=args.at)
    notebooks.write_notebook(loaded.notebook, args.notebook)
    print(f"inserted {args.cell_type} cell {cell.id} at index {index} of {args.notebook}")
    return 0


def cmd_replace(args: argparse.Namespace) -> int:
    from nbkube.cli import notebooks

    loaded = _load(args.notebook)
    notebooks.replace_source(loaded.notebook, args.cell_id, _source(args))
    notebooks.write_notebook(loaded.notebook, args.notebook)
    print(f"replaced the source of cell {args.cell_id} in {args.notebook}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from nbkube.cli import notebooks

    loaded = _load(args.notebook)
    notebooks.delete_cell(loaded.notebook, args.cell_id)
    notebooks.write_notebook(loaded.notebook, args.notebook)
    print(f"deleted cell {args.cell_id} from {args.notebook}")
    return 0
