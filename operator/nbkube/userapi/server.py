"""The user-facing API server: an aggregated API behind the Kubernetes API server (see the package).

Every request is authenticated by the front proxy's client certificate and headers
(`frontproxy.identity`), then authorised by a SubjectAccessReview for the verb on the named
(sub)resource in the request's namespace (`authz.Authorizer`). A refusal says nothing about whether the
thing asked for exists. Namespace and run names are checked as Kubernetes names before they reach a
Kubernetes call, git or the filesystem.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from nbkube.kube import InvalidName, Kube, KubeError, check_name, check_namespace, run_path, session_path
from nbkube.results.http import GitGate, RenderGate, repository_routes
from nbkube.run.logs import stream_events
from nbkube.userapi import paths
from nbkube.userapi.authz import SAR_PATH, Attributes, Authorizer
from nbkube.userapi.frontproxy import NotAuthenticated, RequestHeaderConfig, UserInfo, identity
from nbkube.userapi.sessions import Sessions, session_routes
from nbkube.userapi.webpage import page_routes

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER_KEY = web.RequestKey("nbkube_user", UserInfo)
STORE_KEY = web.RequestKey("nbkube_store", object)
NAMESPACED = f"{paths.PREFIX}/namespaces/{{namespace}}"


@dataclass
class UserApi:
    """What the routes need. `results` is the per-namespace results (ResultsRepositories)."""

    kube: Kube  # the user-facing client: its own small pool, never the operator's
    results: Any
    journal_dir: Path
    requestheader: RequestHeaderConfig
    sessions: Sessions | None = None
    """The operator's live sessions (their operations); None where sessions are not served."""
    authorizer: Authorizer = field(init=False)
    gate: GitGate = field(default_factory=GitGate)
    renders: RenderGate = field(default_factory=RenderGate)
    max_log_streams: int = 64
    max_log_streams_per_user: int = 8
    write_stall_seconds: float = 30.0
    """A log stream whose reader takes nothing for this long is closed (its slot goes to others)."""
    _streams_of: dict[str, int] = field(default_factory=dict)
    """Open log streams per user (a user with none has no entry)."""

    @property
    def log_streams(self) -> int:
        return sum(self._streams_of.values())

    def __post_init__(self) -> None:
        self.authorizer = Authorizer(lambda body: self.kube.call("POST", SAR_PATH, body))

    async def read_run(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get_or_none(run_path(namespace, name))

    async def read_session(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get_or_none(session_path(namespace, name))


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def _middlewares(api: UserApi) -> list[Any]:
    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            request[USER_KEY] = identity(
                request.transport.get_extra_info("peercert") if request.transport else None,
                request.headers,
                api.requestheader,
            )
        except NotAuthenticated as exc:
            log.info("user API: unauthenticated request to %s: %s", request.path[:200], exc)
            return _status(401, "Unauthorized", "Unauthorized")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = (exc.text or exc.reason or "").strip()
            return _status(exc.status, _REASONS.get(exc.status, exc.reason.replace(" ", "")), message)

    return [authenticate]


def _names(request: web.Request, *keys: str) -> list[str]:
    try:
        values = [check_namespace(request.match_info["namespace"])]
        values += [check_name(request.match_info[k]) for k in keys]
    except InvalidName as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return values


async def _authorize(
    api: UserApi, request: web.Request, namespace: str, resource: str, name: str, verb: str = "get"
) -> None:
    user: UserInfo = request[USER_KEY]
    res, sub = resource.split("/", 1)
    try:
        allowed, reason = await api.authorizer.check(user, Attributes(namespace, verb, res, sub, name))
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("user API: could not review %s's access: %s", user.name, exc)
        raise web.HTTPServiceUnavailable(text="could not check access right now: try again") from None
    if not allowed:
        log.info("user API: %s may not %s %s %s/%s", user.name, verb, resource, namespace, name)
        raise web.HTTPForbidden(
            text=f'{user.name} cannot {verb} {resource} "{name}" in namespace "{namespace}"'
            + (f": {reason}" if reason else "")
        )


def _discovery() -> dict[str, Any]:
    def resource(name: str, kind: str, verbs: tuple[str, ...] = ("get",)) -> dict[str, Any]:
        return {"name": name, "singularName": "", "namespaced": True, "kind": kind, "verbs": list(verbs)}

    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{paths.GROUP}/{paths.VERSION}",
        "resources": [
            resource(paths.RUN_LOG, "NotebookRunLog"),
            resource(paths.REPOSITORY_GIT, "Repository"),
            resource(paths.REPOSITORY_FILES, "Repository"),
            resource(paths.REPOSITORY_RUNS, "Repository"),
            resource(paths.REPOSITORY_HTML, "Repository"),
            resource(paths.REPOSITORY_UI, "Repository"),
            *(resource(f"{paths.SESSIONS}/{sub}", "NotebookSession") for sub in paths.SESSION_READS),
            *(
                resource(f"{paths.SESSIONS}/{sub}", "NotebookSession", ("create",))
                for sub in paths.SESSION_OPERATIONS
            ),
        ],
    }


def user_api_app(api: UserApi) -> web.Application:
    app = web.Application(middlewares=_middlewares(api), client_max_size=1024 * 1024)

    async def discovery(request: web.Request) -> web.Response:
        return web.json_response(_discovery())

    async def run_log(request: web.Request) -> web.StreamResponse:
        namespace, name = _names(request, "name")
        await _authorize(api, request, namespace, paths.RUN_LOG, name)
        follow = request.query.get("follow", "false").lower() in ("1", "true", "yes")
        user = request[USER_KEY].name
        if api.log_streams >= api.max_log_streams:
            raise web.HTTPTooManyRequests(text="too many log streams at once: try again shortly")
        if api._streams_of.get(user, 0) >= api.max_log_streams_per_user:
            raise web.HTTPTooManyRequests(
                text=f"{user} has {api.max_log_streams_per_user} log streams open already: close one first"
            )
        api._streams_of[user] = api._streams_of.get(user, 0) + 1
        try:
            if await api.read_run(namespace, name) is None:
                raise web.HTTPNotFound(text=f'notebookruns.nbkube.io "{name}" not found')
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            events = stream_events(api.read_run, api.results, api.journal_dir, namespace, name, follow)
            try:
                async for event in events:
                    async with asyncio.timeout(api.write_stall_seconds):
                        await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
                await response.write_eof()
            except TimeoutError:
                log.info(
                    "user API: %s's log stream of %s/%s read nothing for %gs: closed",
                    user,
                    namespace,
                    name,
                    api.write_stall_seconds,
                )
                if request.transport is not None:
                    request.transport.abort()
            finally:
                await events.aclose()
            return response
        finally:
            api._streams_of[user] -= 1
            if not api._streams_of[user]:
                del api._streams_of[user]

    def repository(sub: str, inner: Handler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            (namespace,) = _names(request)
            await _authorize(api, request, namespace, f"repositories/{sub}", paths.REPOSITORY)
            store = await api.results.repository(namespace)
            if store is None:  # a namespace with no result yet: as absent as a missing path
                raise web.HTTPNotFound(text=f'no results in namespace "{namespace}" yet')
            request[STORE_KEY] = store
            return await inner(request)

        return handler

    async def store_of(request: web.Request) -> Any:
        return request[STORE_KEY]

    app.router.add_get(paths.PREFIX, discovery)
    app.router.add_get(f"{NAMESPACED}/notebookruns/{{name}}/log", run_log)

    async def authorize(request: web.Request, namespace: str, resource: str, name: str, verb: str) -> None:
        await _authorize(api, request, namespace, resource, name, verb)

    for method, path, handler in session_routes(
        api.sessions, api.results, api.read_session, _names, authorize
    ):
        app.router.add_route(method, NAMESPACED + path, handler)
    repo_base = f"{NAMESPACED}/repositories/{paths.REPOSITORY}"

    def page(inner: Handler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            (namespace,) = _names(request)
            await _authorize(api, request, namespace, paths.REPOSITORY_UI, paths.REPOSITORY)
            return await inner(request)  # static: needs no results yet, reads nothing of the namespace

        return handler

    for route in page_routes():
        app.router.add_route(route.method, repo_base + "/ui" + route.path, page(route.handler))
    for route in repository_routes(store_of, api.gate, api.renders):
        sub = route.path.strip("/").split("/", 1)[0]
        app.router.add_route(route.method, repo_base + route.path, repository(sub, route.handler))
    return app


async def serve_user_api(
    api: UserApi,
    host: str,
    port: int,
    ssl_context: Any,
    on_cleanup: Callable[[web.Application], Awaitable[None]] | None = None,
) -> web.AppRunner:
    app = user_api_app(api)
    if on_cleanup is not None:
        app.on_cleanup.append(on_cleanup)
    # A client gone away cancels its handler: a quiet follower's slot, a fetch's git process, and the
    # review it waits on are given back at once instead of when the next write fails.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0, handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
