"""Notebooks for the tests of rendered HTML: a real PNG output, and outputs that try to run script."""

from __future__ import annotations

import base64
import struct
import zlib
from html.parser import HTMLParser
from typing import Any

import nbformat

MARKER = "nbkube-pwned"
"""What every hostile output tries to make appear: a title, an element id, a request path."""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        return struct.pack(">I", len(data)) + tag + data + crc

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


HOSTILE_HTML = (
    # Were it run, this would retitle the page and add an element: no markup in it for a sanitizer to keep.
    f"<script>document.title='{MARKER}';"
    f"document.body.appendChild(Object.assign(document.createElement('p'), {{id: '{MARKER}'}}))</script>"
    f"<img src=x onerror=\"document.title='{MARKER}'\">"
    f"<a id=link href=\"javascript:document.title='{MARKER}'\">a link</a>"
    "<b>bold survives</b>"
    f'<iframe src="/{MARKER}"></iframe><style>@import url(/{MARKER}.css);</style>'
)


def hostile_outputs() -> list[Any]:
    """Display outputs of every kind a kernel can send that would run script if written as they came."""
    return [
        nbformat.v4.new_output("display_data", data={"text/html": HOSTILE_HTML, "text/plain": "html"}),
        nbformat.v4.new_output("display_data", data={"application/javascript": f"document.title='{MARKER}'"}),
        nbformat.v4.new_output(
            "display_data",
            data={"text/markdown": f"[md](javascript:alert(1)) <script>document.title='{MARKER}'</script>"},
        ),
        nbformat.v4.new_output(
            "display_data",
            data={
                "image/svg+xml": "<svg xmlns='http://www.w3.org/2000/svg' "
                f"onload=\"document.title='{MARKER}'\"><script>document.title='{MARKER}'</script></svg>"
            },
        ),
    ]


class Elements(HTMLParser):
    """Every element of a document with its attributes, and the text of <style> and <b> elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self.bold: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.styles.append(data)
        elif self._in == "b":
            self.bold.append(data)


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def png_images(html: str) -> list[bytes]:
    """The decoded bytes of every <img> whose src is a data: URI of a PNG."""
    prefix = "data:image/png;base64,"
    return [
        base64.b64decode(attrs["src"][len(prefix) :])
        for tag, attrs in parse(html).elements
        if tag == "img" and attrs.get("src", "").startswith(prefix)
    ]
