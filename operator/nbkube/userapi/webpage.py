"""The read-only web page of a namespace: its runs and sweeps, a run's cells as they execute, its
rendered notebook. Static files (plain HTML, a little vanilla JavaScript, no build step, nothing from a
CDN) served below `repositories/results/ui/` once the caller may `get repositories/ui` there.

The page reads everything else with the viewer's own credentials through the same origin: runs from the
Kubernetes API (`/apis/nbkube.io/...`, RBAC `list`/`get notebookruns`), notebooks from this API's
`repositories/results/html/` (inert HTML, shown in a sandboxed frame). It writes nothing.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

# Scripts and styles only from the page's own origin; notebooks only in frames of it; no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSETS = {
    "": ("index.html", "text/html"),
    "app.js": ("app.js", "text/javascript"),
    "style.css": ("style.css", "text/css"),
}


@cache
def asset(name: str) -> bytes:
    return (resources.files("nbkube.userapi") / "page" / name).read_bytes()


def page_routes() -> list[web.RouteDef]:
    """Routes below the page's base (`.../repositories/results/ui`)."""

    async def redirect(request: web.Request) -> web.StreamResponse:
        # Relative, so it holds behind any proxy prefix: `.../results/ui` -> `.../results/ui/`.
        raise web.HTTPFound("ui/")

    async def serve(request: web.Request) -> web.StreamResponse:
        found = ASSETS.get(request.match_info.get("asset", ""))
        if found is None:
            raise web.HTTPNotFound(text="no such file of the page")
        name, content_type = found
        return web.Response(
            body=asset(name),
            content_type=content_type,
            charset="utf-8",
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-cache",
            },
        )

    return [web.get("", redirect), web.get("/", serve), web.get("/{asset}", serve)]
