"""Where a run's notebook comes from: inline cells, a ConfigMap key, or the results repository."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import nbformat
from nbformat import NotebookNode

from nbkube.api import NotebookSource
from nbkube.kube import Kube, resource_path


class NotebookUnavailable(Exception):
    """The notebook's source does not exist (yet): a ConfigMap or key or a repository path is missing."""


class InvalidNotebook(Exception):
    """The notebook exists but is not a valid nbformat notebook."""


def from_cells(source: NotebookSource, kernel_name: str) -> NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": kernel_name, "display_name": kernel_name, "language": "python"}
    for index, cell in enumerate(source.cells or []):
        # Built as plain nbformat 4.5 dicts: the CRD schema already checked them, and nbformat's
        # new_*_cell helpers run a full JSON-schema validation per cell.
        node: dict[str, Any] = {
            "cell_type": cell.cell_type,
            "id": cell.id or f"cell-{index}",
            "metadata": {"tags": list(cell.tags)} if cell.tags else {},
            "source": cell.source,
        }
        if cell.cell_type == "code":
            node.update(outputs=[], execution_count=None)
        nb.cells.append(nbformat.from_dict(node))
    ids = [c["id"] for c in nb.cells]
    if len(set(ids)) != len(ids):
        raise InvalidNotebook("cell ids must be unique")
    return nb


def parse_notebook(raw: bytes | str, origin: str) -> NotebookNode:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        nb = nbformat.reads(text, as_version=4)
    except (UnicodeDecodeError, json.JSONDecodeError, nbformat.reader.NotJSONError) as exc:
        raise InvalidNotebook(f"{origin} is not a notebook: {_first_line(exc)}") from None
    except Exception as exc:  # nbformat raises a variety of errors for malformed documents
        raise InvalidNotebook(f"{origin} is not a valid notebook: {_first_line(exc)}") from None
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        raise InvalidNotebook(f"{origin} fails nbformat validation: {_first_line(exc)}") from None
    return nb


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


async def from_config_map(kube: Kube, namespace: str, name: str, key: str) -> NotebookNode:
    cm = await kube.get_or_none(resource_path("v1", "configmaps", namespace, name))
    if cm is None:
        raise NotebookUnavailable(f"ConfigMap {namespace}/{name} not found")
    data: dict[str, Any] = cm.get("data") or {}
    binary: dict[str, Any] = cm.get("binaryData") or {}
    if key in data:
        raw: bytes | str = data[key]
    elif key in binary:
        raw = base64.b64decode(binary[key])
    else:
        keys = sorted(list(data) + list(binary))
        raise NotebookUnavailable(
            f"ConfigMap {namespace}/{name} has no key {key!r} (keys: {', '.join(keys)})"
        )
    # Parsing and schema validation are CPU work: off the event loop.
    return await asyncio.to_thread(parse_notebook, raw, f"ConfigMap {namespace}/{name} key {key}")


RepoReader = Callable[[str], Awaitable[bytes | None]]


async def load(
    kube: Kube, namespace: str, source: NotebookSource, kernel_name: str, read_repo: RepoReader
) -> NotebookNode:
    if source.cells is not None:
        return from_cells(source, kernel_name)
    if source.config_map_ref is not None:
        ref = source.config_map_ref
        return await from_config_map(kube, namespace, ref.name, ref.key)
    assert source.repo_path is not None
    raw = await read_repo(source.repo_path)
    if raw is None:
        raise NotebookUnavailable(f"{source.repo_path} not found in this namespace's results repository")
    return await asyncio.to_thread(parse_notebook, raw, f"results repository path {source.repo_path}")
