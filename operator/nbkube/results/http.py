"""Serving one results repository over HTTP: git smart HTTP (read only), single files, the run list.

These are the building blocks the user-facing API (`nbkube.userapi`) serves for each namespace, after
it has authenticated and authorised the caller; nothing here knows who is asking. Every request value
that reaches git is checked first, and the work one request can cause is bounded:

- `ref` is a full commit id or a branch name (never a revision expression such as `HEAD^{/regex}`);
- `git upload-pack` runs at most `GitLimits.max_concurrent` at a time (callers wait up to
  `queue_seconds`, then get 503); its request body must arrive within `body_seconds` with no gap longer
  than `idle_seconds`; the whole exchange is cut after `process_seconds`;
- files larger than `INLINE_MAX` are streamed from `git cat-file` rather than held in memory;
- a notebook rendered as HTML (`render.render_html`, in a thread) is at most `MAX_NOTEBOOK_BYTES`, and
  at most `RenderGate.max_concurrent` render at once (callers wait up to `queue_seconds`, then 503).

`serve_results(store)` serves one repository alone on a loopback port, without authentication: for
tests and benches (the direct baseline of `make bench-results`), never for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re

from aiohttp import web

from ._git import git_argv, git_env
from .layout import split_path
from .render import CONTENT_SECURITY_POLICY, MAX_NOTEBOOK_BYTES, NotRenderable, render_html
from .store import ResultsStore

INLINE_MAX = 1024 * 1024
CHUNK = 64 * 1024
_PROTOCOL_RE = re.compile(r"^[A-Za-z0-9=:,._-]{0,200}$")
_CONTENT_TYPES = {".ipynb": "application/x-ipynb+json", ".json": "application/json", ".txt": "text/plain"}
_COMMIT_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}(?:/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,7}$")


class BadRef(ValueError):
    pass


def parse_ref(ref: str | None) -> str:
    """What git is given for a user's `ref`: a full commit id as it is, `refs/heads/<branch>` for a
    branch name, HEAD when absent. Anything else (abbreviated ids, `^`, `~`, `@{`, `:`, regexes) is
    refused: git would search history for them."""
    if ref is None or ref == "" or ref == "HEAD":
        return "HEAD"
    if _COMMIT_RE.match(ref):
        return ref
    name = ref.removeprefix("refs/heads/")
    if _BRANCH_RE.match(name) and ".." not in name and not name.endswith((".lock", ".")):
        return f"refs/heads/{name}"
    raise BadRef(f"invalid ref {ref!r}: give a full commit id or a branch name")


@dataclasses.dataclass
class GitLimits:
    max_concurrent: int = 4
    queue_seconds: float = 30.0
    idle_seconds: float = 30.0
    body_seconds: float = 120.0
    process_seconds: float = 600.0
    max_body_bytes: int = 16 * 1024 * 1024


class GitGate:
    """How many upload-packs run at once, for the whole process."""

    def __init__(self, limits: GitLimits | None = None) -> None:
        self.limits = limits or GitLimits()
        self._slots = asyncio.Semaphore(self.limits.max_concurrent)

    @contextlib.asynccontextmanager
    async def slot(self):  # type: ignore[no-untyped-def]
        try:
            await asyncio.wait_for(self._slots.acquire(), self.limits.queue_seconds)
        except TimeoutError:
            raise web.HTTPServiceUnavailable(
                text="too many git fetches at once: try again shortly\n", headers={"Retry-After": "5"}
            ) from None
        try:
            yield
        finally:
            self._slots.release()


def _protocol_env(request: web.Request) -> dict[str, str]:
    version = request.headers.get("Git-Protocol", "")
    return {"GIT_PROTOCOL": version} if version and _PROTOCOL_RE.match(version) else {}


def _pkt_line(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await proc.wait()


async def info_refs(request: web.Request, store: ResultsStore, gate: GitGate) -> web.Response:
    if request.query.get("service") != "git-upload-pack":
        raise web.HTTPForbidden(text="read-only git smart HTTP: only git-upload-pack is served\n")
    env = _protocol_env(request)
    async with gate.slot():
        proc = await asyncio.create_subprocess_exec(
            *git_argv(
                store.git_dir, "upload-pack", "--stateless-rpc", "--advertise-refs", str(store.git_dir)
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            stdin=asyncio.subprocess.DEVNULL,
            env=git_env(env),
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), gate.limits.idle_seconds)
        except TimeoutError:
            raise web.HTTPServiceUnavailable(text="git upload-pack did not answer in time\n") from None
        finally:
            await _kill(proc)
    if proc.returncode != 0:
        raise web.HTTPInternalServerError(text="git upload-pack failed\n")
    prefix = (
        b""
        if "version=2" in env.get("GIT_PROTOCOL", "")
        else _pkt_line("# service=git-upload-pack\n") + b"0000"
    )
    return web.Response(
        body=prefix + out,
        content_type="application/x-git-upload-pack-advertisement",
        headers={"Cache-Control": "no-cache"},
    )


async def _read_body(request: web.Request, limits: GitLimits) -> bytes:
    """The whole request body (upload-pack's wants and haves are small), within the limits."""
    chunks: list[bytes] = []
    size = 0
    async with asyncio.timeout(limits.body_seconds):
        while True:
            try:
                chunk = await asyncio.wait_for(request.content.readany(), limits.idle_seconds)
            except TimeoutError:
                raise web.HTTPRequestTimeout(text="the request body stalled\n") from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise web.HTTPRequestEntityTooLarge(limits.max_body_bytes, size)
            chunks.append(chunk)


async def upload_pack(request: web.Request, store: ResultsStore, gate: GitGate) -> web.StreamResponse:
    limits = gate.limits
    try:
        body = await _read_body(request, limits)  # aiohttp undoes Content-Encoding
    except TimeoutError:
        raise web.HTTPRequestTimeout(text="the request body took too long\n") from None
    async with gate.slot():
        proc = await asyncio.create_subprocess_exec(
            *git_argv(store.git_dir, "upload-pack", "--stateless-rpc", str(store.git_dir)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=git_env(_protocol_env(request)),
        )
        assert proc.stdin is not None and proc.stdout is not None
        stdin, stdout = proc.stdin, proc.stdout

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(body)
                await stdin.drain()
            stdin.close()

        feeder = asyncio.create_task(feed())
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-git-upload-pack-result", "Cache-Control": "no-cache"}
        )
        try:
            async with asyncio.timeout(limits.process_seconds):
                await response.prepare(request)
                while chunk := await stdout.read(CHUNK):
                    await response.write(chunk)
                await feeder
                await proc.wait()
            await response.write_eof()
            return response
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
            await _kill(proc)


async def _locate(request: web.Request, store: ResultsStore, path: str) -> tuple[str, str, int]:
    """(commit, blob id, size) of `path` at the request's `ref`; 400 for a bad path or ref, 404 when
    it is not there."""
    try:
        split_path(path)
        ref = parse_ref(request.query.get("ref"))
        commit = await store.resolve(ref)
        stat = await store.stat_file(path, commit) if commit else None
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from exc
    if commit is None or stat is None:
        raise web.HTTPNotFound(text=f"{path} not found at {request.query.get('ref') or 'HEAD'}\n")
    blob, size = stat
    return commit, blob, size


async def file_response(request: web.Request, store: ResultsStore, path: str) -> web.StreamResponse:
    """`path` at the request's `ref`: its bytes, with `X-Nbkube-Commit` and the blob id as `ETag`."""
    commit, blob, size = await _locate(request, store, path)
    suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    headers = {
        "Content-Type": _CONTENT_TYPES.get(suffix, "application/octet-stream"),
        "X-Nbkube-Commit": commit,
        "ETag": f'"{blob}"',
        "Content-Length": str(size),
    }
    if size <= INLINE_MAX:
        return web.Response(body=await store.read_file(path, commit), headers=headers)
    # Large spills are streamed from a one-off process instead of passing through memory.
    response = web.StreamResponse(headers=headers)
    async with store.open_blob(blob) as stream:
        await response.prepare(request)
        while chunk := await stream.read(CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response


async def runs_response(store: ResultsStore) -> web.Response:
    return web.json_response([dataclasses.asdict(r) for r in await store.list_runs()])


async def _read_only(request: web.Request) -> web.Response:
    raise web.HTTPForbidden(text="the nbkube results repository is read-only\n")


class RenderGate:
    """How many notebooks render as HTML at once, for the whole process (rendering is CPU work)."""

    def __init__(self, max_concurrent: int = 2, queue_seconds: float = 30.0) -> None:
        self.queue_seconds = queue_seconds
        self._slots = asyncio.Semaphore(max_concurrent)

    async def render(self, data: bytes, title: str) -> str:
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_seconds)
        except TimeoutError:
            raise web.HTTPServiceUnavailable(
                text="too many notebooks rendering at once: try again shortly\n", headers={"Retry-After": "5"}
            ) from None
        try:
            # A cancelled request leaves its render to finish in the thread, holding its slot till then.
            return await asyncio.to_thread(render_html, data, title)
        finally:
            self._slots.release()


async def html_response(
    request: web.Request, store: ResultsStore, path: str, gate: RenderGate
) -> web.Response:
    """The notebook at `path` and the request's `ref`, rendered as one inert HTML page (see
    `render`), with a Content-Security-Policy that lets nothing in it run or load."""
    if not path.endswith(".ipynb"):
        raise web.HTTPBadRequest(text=f"{path} is not a notebook (.ipynb): only notebooks render as HTML\n")
    commit, blob, size = await _locate(request, store, path)
    if size > MAX_NOTEBOOK_BYTES:
        raise web.HTTPRequestEntityTooLarge(
            MAX_NOTEBOOK_BYTES,
            size,
            text=f"{path} is {size} bytes: at most {MAX_NOTEBOOK_BYTES} render as HTML; fetch the .ipynb\n",
        )
    data = await store.read_file(path, commit)
    title = f"{path} at {commit[:12]}"
    try:
        html = await gate.render(data, title)
    except NotRenderable as exc:
        raise web.HTTPUnprocessableEntity(text=f"{path} at {commit[:12]}: {exc}\n") from None
    return web.Response(
        text=html,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Nbkube-Commit": commit,
            "ETag": f'"html-{blob}"',
        },
    )


def repository_routes(  # type: ignore[no-untyped-def]
    store_of, gate: GitGate, renders: RenderGate | None = None
) -> list[web.RouteDef]:
    """The routes of one repository below a prefix; `store_of(request)` is an async function giving the
    request's ResultsStore (raising an HTTP error when there is none)."""
    render_gate = renders or RenderGate()

    async def refs(request: web.Request) -> web.StreamResponse:
        return await info_refs(request, await store_of(request), gate)

    async def pack(request: web.Request) -> web.StreamResponse:
        return await upload_pack(request, await store_of(request), gate)

    async def files(request: web.Request) -> web.StreamResponse:
        return await file_response(request, await store_of(request), request.match_info["path"])

    async def runs(request: web.Request) -> web.StreamResponse:
        return await runs_response(await store_of(request))

    async def html(request: web.Request) -> web.StreamResponse:
        return await html_response(request, await store_of(request), request.match_info["path"], render_gate)

    return [
        web.get("/git/info/refs", refs),
        web.post("/git/git-upload-pack", pack),
        web.post("/git/git-receive-pack", _read_only),
        web.get("/files/{path:.+}", files),
        web.get("/html/{path:.+}", html),
        web.get("/runs", runs),
    ]


async def serve_results(
    store: ResultsStore, host: str = "127.0.0.1", port: int = 0, gate: GitGate | None = None
) -> tuple[web.AppRunner, str]:
    """One repository served alone, unauthenticated, on host:port (0: a free port), for tools and
    tests. Returns the runner (clean it up to stop) and the base URL (`<base>/git` clones)."""

    async def store_of(request: web.Request) -> ResultsStore:
        return store

    app = web.Application()
    app.add_routes(repository_routes(store_of, gate or GitGate()))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}"
