"""Executed notebooks rendered as HTML (nbkube.results.render): images inlined, nothing that runs.

Kernel output is hostile: the page is served from the user API's origin, where a script would act with
the viewer's credentials. The browser test (tests/userapi/test_web_page.py) opens such a page too.
"""

from __future__ import annotations

import base64
from pathlib import Path

import nbformat
import pytest
from nbkube.results.render import (
    CONTENT_SECURITY_POLICY,
    MAX_NOTEBOOK_BYTES,
    META_POLICY,
    NotRenderable,
    render_html,
)
from nbkube_testenv.hostile_notebooks import MARKER, hostile_outputs, parse, png, png_images


def notebook(*cells: nbformat.NotebookNode) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = list(cells)
    return nbformat.writes(nb).encode()


def code(source: str, *outputs: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(source, execution_count=1)
    cell.outputs = list(outputs)
    return cell


def test_a_png_output_is_an_img_with_a_data_uri_of_the_same_bytes() -> None:
    image = png(7, 5, (10, 200, 30))
    out = nbformat.v4.new_output("display_data", data={"image/png": base64.b64encode(image).decode()})
    html = render_html(notebook(code("plot()", out)), title="ns/run/nb.ipynb at 0123456789ab")
    assert png_images(html) == [image]
    assert "<title>ns/run/nb.ipynb at 0123456789ab</title>" in html


def test_cell_sources_streams_and_markdown_are_rendered_as_text() -> None:
    stream = nbformat.v4.new_output("stream", name="stdout", text="tick 1 < 2 & done\n")
    html = render_html(notebook(nbformat.v4.new_markdown_cell("# The heading"), code("print('x')", stream)))
    assert "tick 1 &lt; 2 &amp; done" in html
    assert any(tag == "h1" for tag, _ in parse(html).elements)


def test_no_hostile_output_becomes_a_script_a_handler_a_frame_or_a_javascript_url() -> None:
    markdown = nbformat.v4.new_markdown_cell(
        f"<script>document.title='{MARKER}'</script><img src=x onerror=alert(1)> [x](javascript:alert(2))"
    )
    html = render_html(notebook(markdown, code("display(evil)", *hostile_outputs())))
    document = parse(html)
    tags = [tag for tag, _ in document.elements]
    assert "script" not in tags
    assert not {"iframe", "object", "embed", "svg", "base", "form"} & set(tags)
    for tag, attrs in document.elements:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("href", "src", "action", "formaction", "xlink:href"):
            assert not attrs.get(name, "").strip().lower().startswith("javascript:"), (tag, attrs)
    assert not any(MARKER in style for style in document.styles)  # the output's <style> is text now
    assert "bold survives" in document.bold  # allowed HTML stays HTML
    assert "[JavaScript output not shown]" in html


def test_the_page_loads_nothing_from_the_network() -> None:
    html = render_html(notebook(code("1", *hostile_outputs())))
    for tag, attrs in parse(html).elements:
        for name in ("src", "href"):
            value = attrs.get(name, "")
            assert not value.startswith(("http:", "https:", "//")), (tag, attrs)
    # The template's own loaders (require.js, MathJax, mermaid, widgets) are left out.
    for cdn in ("cdnjs.cloudflare.com", "unpkg.com", "require.min.js", "mathjax"):
        assert cdn not in html.lower(), cdn


def test_a_markdown_image_naming_a_file_is_never_read_from_the_servers_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = png(2, 2, (1, 2, 3))
    (tmp_path / "secret.png").write_bytes(secret)
    monkeypatch.chdir(tmp_path)
    html = render_html(notebook(nbformat.v4.new_markdown_cell("![x](secret.png) ![y](/etc/hostname)")))
    assert base64.b64encode(secret).decode() not in html
    assert png_images(html) == []


def test_a_markdown_attachment_is_inlined() -> None:
    image = png(3, 3, (0, 0, 255))
    cell = nbformat.v4.new_markdown_cell("![pic](attachment:pic.png)")
    cell["attachments"] = {"pic.png": {"image/png": base64.b64encode(image).decode()}}
    assert png_images(render_html(notebook(cell))) == [image]


@pytest.mark.parametrize(
    "data",
    [b"not json", b'{"cells": 3}', b"\xff\xfe", b'{"nbformat": 4, "nbformat_minor": 5, "cells": [{"x": 1}]}'],
)
def test_what_is_not_a_notebook_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(NotRenderable, match=r"not a notebook|could not render"):
        render_html(data)


def test_a_notebook_over_the_limit_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(NotRenderable, match=f"at most {MAX_NOTEBOOK_BYTES}"):
        render_html(b" " * (MAX_NOTEBOOK_BYTES + 1))


def test_the_content_security_policy_sandboxes_the_page_and_allows_no_script() -> None:
    directives = {d.split()[0]: d.split()[1:] for d in CONTENT_SECURITY_POLICY.split("; ")}
    assert directives["sandbox"] == []  # no allow-scripts, no allow-same-origin
    assert directives["default-src"] == ["'none'"]
    assert "script-src" not in directives  # so default-src 'none' holds for scripts
    assert directives["img-src"] == ["data:"]


def test_a_saved_page_carries_a_policy_of_its_own_before_any_content() -> None:
    html = render_html(notebook(code("1", *hostile_outputs())))
    metas = [a for tag, a in parse(html).elements if tag == "meta" and "http-equiv" in a]
    assert metas == [{"http-equiv": "Content-Security-Policy", "content": META_POLICY}]
    assert html.index("Content-Security-Policy") < html.index("<body")
    assert "script-src" not in META_POLICY and "default-src 'none'" in META_POLICY
