"""Read-only HTTP access to the results repository, mounted by the operator on its HTTP port.

Mount it with `app.add_subapp("/results", results_http_app(store))` (the operator does, on its results
port, 8082 by default); then, after `kubectl -n nbkube port-forward <operator pod or deployment> 8082`:

    git clone http://127.0.0.1:8082/results nbkube-results        # read-only git smart HTTP (v0 and v2)
    git clone --filter=blob:none http://127.0.0.1:8082/results    # partial clone: blobs fetched on demand
    git -C nbkube-results pull                                    # later results
    curl -o out.ipynb 'http://127.0.0.1:8082/results/files/default/analysis-1/analysis.ipynb?ref=<commit>'

`nbkube fetch <run> -o out.ipynb` does the last one with `status.result.{commit,path}` of the run; for a
run that is gone, `GET /runs?namespace=<ns>` lists what the repository still holds.

Routes (relative to the mount point):
- `GET /info/refs?service=git-upload-pack`, `POST /git-upload-pack`: git smart HTTP, served by
  `git upload-pack --stateless-rpc`. Pushes (`git-receive-pack`) and the dumb protocol get 403.
- `GET /files/<path>?ref=<commit|branch>` (ref defaults to HEAD): the file's bytes; headers
  `X-Nbkube-Commit` (the commit the ref resolved to) and `ETag` (the blob id). 404 when absent.
- `GET /runs?namespace=<ns>`: the runs at HEAD as JSON (from their `nbkube.json`).
- `GET /final/<uid>`: `{"commit": ..., "path": ...}` of a run's final result, 404 when there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re

from aiohttp import web

from ._git import git_argv, git_env
from .store import ResultsStore

STORE_KEY = web.AppKey("results_store", ResultsStore)
INLINE_MAX = 1024 * 1024
CHUNK = 64 * 1024
_PROTOCOL_RE = re.compile(r"^[A-Za-z0-9=:,._-]{0,200}$")
_CONTENT_TYPES = {".ipynb": "application/x-ipynb+json", ".json": "application/json", ".txt": "text/plain"}


def results_http_app(store: ResultsStore) -> web.Application:
    app = web.Application()
    app[STORE_KEY] = store
    app.router.add_get("/info/refs", _info_refs)
    app.router.add_post("/git-upload-pack", _upload_pack)
    app.router.add_post("/git-receive-pack", _read_only)
    app.router.add_get("/files/{path:.+}", _files)
    app.router.add_get("/runs", _runs)
    app.router.add_get("/final/{uid}", _final)
    return app


async def serve_results(
    store: ResultsStore, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """The results app alone, mounted at /results on host:port (0: a free port), as the operator mounts
    it. Returns the runner (clean it up to stop) and the base URL. For tools and tests; the operator
    serves /results beside /logs on one port."""
    app = web.Application()
    app.add_subapp("/results", results_http_app(store))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_host, bound_port = runner.addresses[0][:2]
    return runner, f"http://{bound_host}:{bound_port}/results"


def _protocol_env(request: web.Request) -> dict[str, str]:
    version = request.headers.get("Git-Protocol", "")
    return {"GIT_PROTOCOL": version} if version and _PROTOCOL_RE.match(version) else {}


async def _read_only(request: web.Request) -> web.Response:
    raise web.HTTPForbidden(text="the nbkube results repository is read-only\n")


def _pkt_line(text: str) -> bytes:
    data = text.encode()
    return f"{len(data) + 4:04x}".encode() + data


async def _info_refs(request: web.Request) -> web.Response:
    if request.query.get("service") != "git-upload-pack":
        raise web.HTTPForbidden(text="read-only git smart HTTP: only git-upload-pack is served\n")
    store = request.app[STORE_KEY]
    env = _protocol_env(request)
    proc = await asyncio.create_subprocess_exec(
        *git_argv(store.git_dir, "upload-pack", "--stateless-rpc", "--advertise-refs", str(store.git_dir)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
        env=git_env(env),
    )
    out, _ = await proc.communicate()
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


async def _upload_pack(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE_KEY]
    proc = await asyncio.create_subprocess_exec(
        *git_argv(store.git_dir, "upload-pack", "--stateless-rpc", str(store.git_dir)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=git_env(_protocol_env(request)),
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    async def feed() -> None:
        try:
            async for chunk in request.content.iter_chunked(CHUNK):  # aiohttp undoes Content-Encoding
                stdin.write(chunk)
                await stdin.drain()
        finally:
            stdin.close()

    feeder = asyncio.create_task(feed())
    response = web.StreamResponse(
        headers={"Content-Type": "application/x-git-upload-pack-result", "Cache-Control": "no-cache"}
    )
    try:
        await response.prepare(request)
        while chunk := await proc.stdout.read(CHUNK):
            await response.write(chunk)
        await feeder
        await proc.wait()
        await response.write_eof()
        return response
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await feeder
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _files(request: web.Request) -> web.StreamResponse:
    store = request.app[STORE_KEY]
    path = request.match_info["path"]
    ref = request.query.get("ref", "HEAD")
    try:
        commit = await store.resolve(ref)
        stat = await store.stat_file(path, commit) if commit else None
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{exc}\n") from exc
    if commit is None or stat is None:
        raise web.HTTPNotFound(text=f"{path} not found at {ref}\n")
    blob, size = stat
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
    proc = await asyncio.create_subprocess_exec(
        *git_argv(store.git_dir, "cat-file", "blob", blob),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        stdin=asyncio.subprocess.DEVNULL,
        env=git_env(),
    )
    assert proc.stdout is not None
    response = web.StreamResponse(headers=headers)
    try:
        await response.prepare(request)
        while chunk := await proc.stdout.read(CHUNK):
            await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _runs(request: web.Request) -> web.Response:
    runs = await request.app[STORE_KEY].list_runs(request.query.get("namespace") or None)
    return web.json_response([dataclasses.asdict(r) for r in runs])


async def _final(request: web.Request) -> web.Response:
    found = await request.app[STORE_KEY].find_final(request.match_info["uid"])
    if found is None:
        raise web.HTTPNotFound(text="no final result for this uid\n")
    return web.json_response(dataclasses.asdict(found))
