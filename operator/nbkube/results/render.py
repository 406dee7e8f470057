"""An executed notebook as one standalone, inert HTML page (nbconvert's HTMLExporter, lab template).

Kernel output is hostile: a cell can display any HTML or JavaScript, and the page is served from the
same origin as the user API (through `nbkube ui` or the API server), where a script would act with the
viewer's credentials. So nothing of the notebook runs:

- HTML and Markdown of cells and outputs go through the template's sanitizing path (`sanitize_html`)
  with `clean_html` below as its filter: bleach with an allow list of the elements notebooks show
  (headings, paragraphs, tables, lists, code, images) and their harmless attributes; `<script>`,
  `<style>`, frames, forms, SVG, event handlers, `style`, and any URL but http(s)/mailto links and
  `data:image/...` images are escaped or dropped. JavaScript outputs (`application/javascript`) and
  widget views are not written at all;
- the template's own scripts (require.js, MathJax, mermaid, widgets: all from a CDN) are left out, so the
  page needs nothing from the network: output images and markdown attachments are `data:` URIs (a
  markdown image naming a file is left as it is: the server never reads files for it), the CSS inline;
- the server adds `CONTENT_SECURITY_POLICY` (a sandbox with no scripts, nothing loaded but inline
  styles and data: images) to every rendered page, in case anything slipped through, and the page
  carries `META_POLICY` itself for when it is saved and opened from a file.

Pure and synchronous (CPU work: callers run it in a thread); nothing here knows who asks.
"""

from __future__ import annotations

from typing import Any

# At most this much notebook JSON is rendered (the HTML is about as large, plus ~0.3 MiB of CSS).
MAX_NOTEBOOK_BYTES = 32 * 1024 * 1024

# The part of the policy a <meta> element can carry (no sandbox, no frame-ancestors there): it travels
# with a page saved by `nbkube fetch --html` and opened from disk, where no header protects it.
META_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:"
CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)

# The lab template, less every <script> it would write: the CDN loaders in the head, JavaScript and
# widget outputs, the widget state in the footer.
_TEMPLATE = """\
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}
<meta http-equiv="Content-Security-Policy" content="{{ resources.nbkube_meta_policy }}">
{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block data_javascript scoped -%}
<div class="jp-OutputArea-output" data-mime-type="application/javascript">
<pre>[JavaScript output not shown]</pre></div>
{%- endblock data_javascript -%}
{%- block data_widget_view scoped -%}
<div class="jp-OutputArea-output"><pre>[widget not shown]</pre></div>
{%- endblock data_widget_view -%}
{%- block footer -%}
</html>
{%- endblock footer -%}
"""
_TEMPLATE_NAME = "nbkube-inert.html.j2"


_TAGS = frozenset(
    {
        *("a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details"),
        *("div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i"),
        *("img", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strong"),
        *("sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul", "var"),
    }
)
_COMMON_ATTRIBUTES = frozenset({"class", "id", "title", "lang", "dir", "align"})
_CELL_ATTRIBUTES = frozenset({"colspan", "rowspan", "scope", "headers"})
_LINK_SCHEMES = ("http://", "https://", "mailto:", "#")


def _attribute_allowed(tag: str, name: str, value: str) -> bool:
    if name in _COMMON_ATTRIBUTES:
        return True
    if tag == "a":
        return name == "href" and value.strip().lower().startswith(_LINK_SCHEMES)
    if tag == "img":
        if name == "src":
            return value.strip().lower().startswith("data:image/")
        return name in ("alt", "width", "height")
    if tag in ("td", "th"):
        return name in _CELL_ATTRIBUTES
    if tag in ("ol", "li"):
        return name in ("start", "value", "type")
    if tag == "details":
        return name == "open"
    return False


def clean_html(element: Any) -> str:
    """Untrusted HTML with only the elements and attributes above kept (others escaped, not dropped,
    so what a cell displayed stays readable as text)."""
    import bleach

    text = element.decode() if isinstance(element, bytes) else str(element)
    return str(
        bleach.clean(
            text,
            tags=_TAGS,
            attributes=_attribute_allowed,
            protocols=frozenset({"http", "https", "mailto", "data"}),
        )
    )


class NotRenderable(ValueError):
    """The bytes are not a notebook nbconvert can render, or too large to render."""


def render_html(data: bytes, title: str = "") -> str:
    """The notebook `data` (its .ipynb bytes) as one HTML page with no script and nothing external."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    if len(data) > MAX_NOTEBOOK_BYTES:
        raise NotRenderable(
            f"the notebook is {len(data)} bytes: at most {MAX_NOTEBOOK_BYTES} are rendered as HTML "
            "(fetch the .ipynb instead)"
        )
    try:
        nb = nbformat.reads(data.decode(), as_version=4)
    except Exception as exc:  # decoding, JSON, nbformat's schema (jsonschema's ValidationError), ...
        raise NotRenderable(f"not a notebook: {type(exc).__name__}: {str(exc)[:200]}") from None
    if title:
        nb.metadata["title"] = title
    _drop_hostile_metadata(nb)
    exporter = HTMLExporter(  # type: ignore[no-untyped-call]
        template_name="lab",
        template_file=_TEMPLATE_NAME,
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        sanitize_html=True,
        filters={"clean_html": clean_html},
        # Output images and markdown attachments are data: URIs anyway; embed_images would also read
        # files a markdown image names, relative to the server's working directory: never.
        embed_images=False,
        exclude_anchor_links=True,
    )
    try:
        body, _ = exporter.from_notebook_node(nb, resources={"nbkube_meta_policy": META_POLICY})
    except Exception as exc:  # nbconvert's errors are of many kinds; a bad notebook is not a crash
        raise NotRenderable(
            f"nbconvert could not render it: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    return str(body)


def _drop_hostile_metadata(nb: Any) -> None:
    """Widget state (the template writes it as script data) is not rendered."""
    nb.metadata.pop("widgets", None)
