"""Outputs and execution results as MCP content: text for streams, text/plain and errors (no ANSI),
image content for image/png, a truncation notice with a resource link to the artifact, and what to
do after a cell that did not succeed."""

from __future__ import annotations

import mcp_types as types
from nbkube.mcp import content

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def test_an_execution_result_becomes_text_image_and_traceback_blocks_and_a_truncation_link() -> None:
    result = {
        "operation": "execute",
        "head": "0123456789abcdef0123",
        "message": "execute a, b: failed (2 of 2 cells, 5 ms)",
        "artifact": "sessions/s/outputs/3.jsonl",
        "cells": [
            {
                "id": "a",
                "state": "succeeded",
                "executionCount": 1,
                "truncated": True,
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": "one\n"},
                    {"output_type": "stream", "name": "stdout", "text": "two\n"},
                    {
                        "output_type": "display_data",
                        "data": {"image/png": PNG + "\n", "text/plain": "<Figure>"},
                        "metadata": {},
                    },
                    {"output_type": "execute_result", "data": {"text/plain": "42"}, "execution_count": 1},
                ],
            },
            {
                "id": "b",
                "state": "failed",
                "executionCount": 2,
                "outputs": [
                    {
                        "output_type": "error",
                        "ename": "ZeroDivisionError",
                        "evalue": "division by zero",
                        "traceback": ["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"],
                    }
                ],
            },
        ],
    }
    blocks = content.execution_blocks("ns", "s", result)
    kinds = [type(b).__name__ for b in blocks]
    assert kinds == ["TextContent", "TextContent", "ImageContent", *["TextContent"] * 4, "ResourceLink"]
    assert blocks[0].text == "execute a, b: failed (2 of 2 cells, 5 ms); head 0123456789ab\n"
    assert blocks[1].text == "── cell a succeeded [1] ──\none\ntwo\n"
    image = blocks[2]
    assert isinstance(image, types.ImageContent) and image.mime_type == "image/png" and image.data == PNG
    assert blocks[3].text == "42\n"
    assert blocks[4].text == "── cell b failed [2] ──\nZeroDivisionError: division by zero\n"
    assert "\x1b" not in blocks[4].text
    assert blocks[5].text.startswith("cell b failed: fix the cell (cell_edit with edit_mode replace)")
    uri = "nbkube://ns/sessions/s/artifacts/sessions/s/outputs/3.jsonl"
    assert uri in blocks[6].text and "cell(s) a were cut" in blocks[6].text
    link = blocks[7]
    assert isinstance(link, types.ResourceLink) and link.uri == uri
    assert [c["id"] for c in content.failed_cells(result)] == ["b"]


def test_a_notebook_lists_cells_by_index_and_id_with_outputs_and_links_its_resource() -> None:
    notebook = {
        "cells": [
            {"id": "m", "cell_type": "markdown", "source": ["# Title"]},
            {
                "id": "c",
                "cell_type": "code",
                "execution_count": 3,
                "source": "print(1)",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}],
            },
        ]
    }
    uri = content.notebook_uri("ns", "s")
    blocks = content.notebook_blocks(notebook, uri, "session s")
    assert [getattr(b, "text", None) for b in blocks[:-1]] == [
        "session s: 2 cell(s)\n",
        "── 0 m markdown ──\n# Title\n",
        "── 1 c code [3] ──\nprint(1)\n┄┄ output ┄┄\n1\n",
    ]
    assert isinstance(blocks[-1], types.ResourceLink) and blocks[-1].uri == "nbkube://ns/sessions/s/notebook"
