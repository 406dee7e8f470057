"""Cell outputs, execution results and runs as MCP content blocks, and the resource URIs of notebooks
and artifacts. Pure functions: no cluster, no SDK server."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import mcp_types as types

from nbkube.api.states import CellState
from nbkube.cli.logs import format_output

SCHEME = "nbkube"
IPYNB_MIME = "application/x-ipynb+json"
# What an agent should do after a cell ended in each state (a tool error carries it).
NEXT_STEP = {
    CellState.FAILED: "fix the cell (cell_edit with edit_mode replace) and execute it again",
    CellState.TIMED_OUT: "the cell was interrupted at its timeout: give execute a larger timeout or make "
    "the cell faster",
    CellState.KERNEL_DIED: "the kernel died (out of memory?): kernel_restart, then execute the cells again "
    "from the first",
    CellState.CANCELLED: "the execution was interrupted: execute the cell again",
    CellState.INPUT_REQUESTED: "the cell asked for input(), which sessions cannot answer: remove the input() "
    "call",
}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def session_uri(namespace: str, session: str, sub: str) -> str:
    return f"{SCHEME}://{quote(namespace, safe='')}/sessions/{quote(session, safe='')}/{sub}"


def notebook_uri(namespace: str, session: str) -> str:
    return session_uri(namespace, session, "notebook")


def artifact_uri(namespace: str, session: str, path: str) -> str:
    return session_uri(namespace, session, f"artifacts/{quote(path, safe='/')}")


def run_notebook_uri(namespace: str, run: str) -> str:
    return f"{SCHEME}://{quote(namespace, safe='')}/runs/{quote(run, safe='')}/notebook"


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def output_blocks(output: dict[str, Any]) -> list[types.ContentBlock]:
    """One nbformat output: text for streams, text/plain and errors (traceback without ANSI colours),
    an image block for image/png (its text/plain alternative dropped)."""
    data = output.get("data") or {}
    if output.get("output_type") in ("execute_result", "display_data") and "image/png" in data:
        png = "".join(_joined(data["image/png"]).split())
        return [types.ImageContent(type="image", data=png, mime_type="image/png")]
    shown = _ANSI.sub("", format_output(output, False))
    return [text(shown)] if shown.strip() else []


def _merged(blocks: list[types.ContentBlock]) -> list[types.ContentBlock]:
    """Adjacent text blocks as one (a cell's stream chunks read as the cell printed them)."""
    out: list[types.ContentBlock] = []
    for block in blocks:
        if isinstance(block, types.TextContent) and out and isinstance(out[-1], types.TextContent):
            out[-1] = text(out[-1].text + block.text)
        else:
            out.append(block)
    return out


def failed_cells(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in result.get("cells") or [] if c.get("state") != CellState.SUCCEEDED]


def execution_blocks(namespace: str, session: str, result: dict[str, Any]) -> list[types.ContentBlock]:
    """An execution's OperationResult: a summary line, then each cell's header and outputs, a
    truncation notice naming the artifact's resource, and for a cell that did not succeed what to do."""
    head = (result.get("head") or "")[:12] or "-"
    blocks: list[types.ContentBlock] = [text(f"{result.get('message') or 'executed'}; head {head}\n")]
    for cell in result.get("cells") or []:
        count = cell.get("executionCount")
        label = f" [{count}]" if count is not None else ""
        cell_blocks: list[types.ContentBlock] = [
            text(f"── cell {cell.get('id')} {cell.get('state')}{label} ──\n")
        ]
        for output in cell.get("outputs") or []:
            cell_blocks.extend(output_blocks(output))
        blocks.extend(_merged(cell_blocks))
        state = cell.get("state")
        if state in NEXT_STEP:
            blocks.append(text(f"cell {cell.get('id')} {state}: {NEXT_STEP[CellState(state)]}\n"))
    truncated = [str(c.get("id")) for c in result.get("cells") or [] if c.get("truncated")]
    artifact = result.get("artifact")
    if truncated and artifact:
        uri = artifact_uri(namespace, session, str(artifact))
        blocks.append(
            text(
                f"outputs of cell(s) {', '.join(truncated)} were cut to keep this answer small; the whole "
                f"outputs are the resource {uri} (JSON lines)\n"
            )
        )
        blocks.append(
            types.ResourceLink(
                type="resource_link", name=str(artifact), uri=uri, mime_type="application/jsonl"
            )
        )
    return blocks


def notebook_blocks(notebook: dict[str, Any], uri: str, origin: str) -> list[types.ContentBlock]:
    """A notebook as an agent reads it: each cell's index, id, type and source, its outputs as
    content blocks, and a link to the .ipynb resource."""
    blocks: list[types.ContentBlock] = [text(f"{origin}: {len(notebook.get('cells') or [])} cell(s)\n")]
    for index, cell in enumerate(notebook.get("cells") or []):
        kind = cell.get("cell_type", "code")
        count = cell.get("execution_count")
        label = f" [{count}]" if kind == "code" and count is not None else ""
        cell_blocks: list[types.ContentBlock] = [
            text(f"── {index} {cell.get('id', '?')} {kind}{label} ──\n{_joined(cell.get('source', ''))}\n")
        ]
        outputs = cell.get("outputs") or []
        if outputs:
            cell_blocks.append(text("┄┄ output ┄┄\n"))
            for output in outputs:
                cell_blocks.extend(output_blocks(output))
        blocks.extend(_merged(cell_blocks))
    blocks.append(types.ResourceLink(type="resource_link", name="notebook", uri=uri, mime_type=IPYNB_MIME))
    return blocks


def as_json(value: Any) -> types.TextContent:
    return text(json.dumps(value, indent=1, sort_keys=False))
