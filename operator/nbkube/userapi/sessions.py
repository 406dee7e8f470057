"""The user API's routes of NotebookSessions: reads (the notebook at any commit, the history, the
kernel's variables) for whoever may view the namespace, operations (edit, exec, interrupt,
restart) for whoever may edit it. Each is authorised on its own subresource before anything is read.

An execution answers as JSON lines: its events as they happen (a cell started, an output, a cell
finished), then the result; a caller that goes away does not stop it (the result is committed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ValidationError

from nbkube.api.common import validation_message
from nbkube.api.sessionops import EditRequest, ExecuteRequest, HistoryEntry, OperationResult
from nbkube.results import BranchCommit
from nbkube.session.history import SESSION_TRAILER
from nbkube.session.work import OperationError
from nbkube.userapi import paths

log = logging.getLogger(__name__)

MAX_HISTORY = 1000
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authorize = Callable[[web.Request, str, str, str, str], Awaitable[None]]
Names = Callable[..., list[str]]
ReadSession = Callable[[str, str], Awaitable[dict[str, Any] | None]]


class Sessions(Protocol):
    """What the routes need of the operator's sessions (session/service.py)."""

    async def submit(self, namespace: str, name: str, kind: str, request: Any = None) -> Any: ...

    async def interrupt(self, namespace: str, name: str) -> bool: ...


class SessionFiles(Protocol):
    async def read_file(self, namespace: str, path: str, ref: str = "HEAD") -> bytes: ...

    async def history(
        self, namespace: str, ref: str, *, limit: int, trailer: str | None = None
    ) -> list[BranchCommit]: ...


def _error(exc: OperationError) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        404: web.HTTPNotFound,
        409: web.HTTPConflict,
        503: web.HTTPServiceUnavailable,
    }
    return kinds.get(exc.status, web.HTTPInternalServerError)(text=exc.message)


def _json(model: BaseModel | list[Any] | dict[str, Any]) -> web.Response:
    body = (
        model.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(model, BaseModel)
        else model
    )
    return web.json_response(body)


async def _body(request: web.Request, model: type[BaseModel]) -> Any:
    try:
        raw = await request.read()
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise web.HTTPBadRequest(text=validation_message(exc, prefix="body")) from None


def session_routes(
    sessions: Sessions | None,
    files: SessionFiles,
    read_session: ReadSession,
    names: Names,
    authorize: Authorize,
) -> list[tuple[str, str, Handler]]:
    """(method, path below a namespace, handler) of every session route."""

    async def session_of(request: web.Request, sub: str, verb: str) -> tuple[str, str]:
        namespace, name = names(request, "name")
        await authorize(request, namespace, f"{paths.SESSIONS}/{sub}", name, verb)
        return namespace, name

    async def stored(namespace: str, name: str) -> dict[str, Any]:
        body = await read_session(namespace, name)
        status = (body or {}).get("status") or {}
        if body is None or not status.get("branch"):
            raise web.HTTPNotFound(text=f'notebooksessions.nbkube.io "{name}" has no history (yet)')
        return status

    async def notebook(request: web.Request) -> web.StreamResponse:
        namespace, name = await session_of(request, "notebook", "get")
        status = await stored(namespace, name)
        # The branch, not status.head: status is written coalesced, the branch moves with each change.
        ref = request.query.get("ref") or f"refs/heads/{status['branch']}"
        try:
            raw = await files.read_file(namespace, status["path"], ref)
        except (FileNotFoundError, ValueError):
            raise web.HTTPNotFound(text=f"the session's notebook is not at {ref[:40]!r}") from None
        return web.Response(body=raw, content_type="application/x-ipynb+json")

    async def history(request: web.Request) -> web.StreamResponse:
        namespace, name = await session_of(request, "history", "get")
        status = await stored(namespace, name)
        try:
            limit = max(1, min(MAX_HISTORY, int(request.query.get("limit", "100"))))
        except ValueError:
            raise web.HTTPBadRequest(text="limit must be a number") from None
        try:
            # A session's own commits and those of the sessions it was forked from (not main's).
            ref = f"refs/heads/{status['branch']}"
            commits = await files.history(namespace, ref, limit=limit, trailer=SESSION_TRAILER)
        except FileNotFoundError:
            raise web.HTTPNotFound(
                text=f"the session's branch {status['branch']} is not in the repository"
            ) from None
        entries = [HistoryEntry(commit=c.commit, time=c.time, message=c.message) for c in commits]
        return _json([e.model_dump(mode="json", by_alias=True) for e in entries])

    def live() -> Sessions:
        if sessions is None:
            raise web.HTTPServiceUnavailable(text="sessions are not served by this operator")
        return sessions

    async def variables(request: web.Request) -> web.StreamResponse:
        namespace, name = await session_of(request, "variables", "get")
        return await _wait(await _submit(live(), namespace, name, "state"))

    async def edit(request: web.Request) -> web.StreamResponse:
        namespace, name = await session_of(request, "edit", "create")
        body = await _body(request, EditRequest)
        return await _wait(await _submit(live(), namespace, name, "edit", body))

    async def restart(request: web.Request) -> web.StreamResponse:
        namespace, name = await session_of(request, "restart", "create")
        return await _wait(await _submit(live(), namespace, name, "restart"))

    async def interrupt(request: web.Request) -> web.StreamResponse:
        namespace, name = await session_of(request, "interrupt", "create")
        try:
            interrupted = await live().interrupt(namespace, name)
        except OperationError as exc:
            raise _error(exc) from None
        message = "the running execution was interrupted" if interrupted else "nothing was running"
        return _json(OperationResult(operation="interrupt", message=message))

    async def execute(request: web.Request) -> web.StreamResponse:
        namespace, name = await session_of(request, paths.SESSION_EXEC, "create")
        body = await _body(request, ExecuteRequest)
        operation = await _submit(live(), namespace, name, "execute", body)
        # A refusal (a stale head, a dead kernel, an unknown cell) comes before any event: it is the
        # response's status, not a line of a 200 stream.
        first = await operation.events.get()
        if first is None:
            return await _wait(operation)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        try:
            await response.write(_line(first))
            while (event := await operation.events.get()) is not None:
                await response.write(_line(event))
            try:
                result = await operation.result
                await response.write(_line({"type": "result", "result": _dump(result)}))
            except OperationError as exc:
                error = {"type": "error", "code": exc.status, "reason": exc.reason, "message": exc.message}
                await response.write(_line(error))
            await response.write_eof()
        except (ConnectionResetError, RuntimeError):
            log.info("user API: a caller of %s/%s's execution went away; it goes on", namespace, name)
        return response

    return [
        ("GET", f"/{paths.SESSIONS}/{{name}}/notebook", notebook),
        ("GET", f"/{paths.SESSIONS}/{{name}}/history", history),
        ("GET", f"/{paths.SESSIONS}/{{name}}/variables", variables),
        ("POST", f"/{paths.SESSIONS}/{{name}}/edit", edit),
        ("POST", f"/{paths.SESSIONS}/{{name}}/{paths.SESSION_EXEC}", execute),
        ("POST", f"/{paths.SESSIONS}/{{name}}/interrupt", interrupt),
        ("POST", f"/{paths.SESSIONS}/{{name}}/restart", restart),
    ]


async def _submit(sessions: Sessions, namespace: str, name: str, kind: str, body: Any = None) -> Any:
    try:
        return await sessions.submit(namespace, name, kind, body)
    except OperationError as exc:
        raise _error(exc) from None


async def _wait(operation: Any) -> web.StreamResponse:
    try:
        result = await operation.result
    except OperationError as exc:
        raise _error(exc) from None
    return _json(result)


def _dump(result: Any) -> Any:
    return (
        result.model_dump(mode="json", by_alias=True, exclude_none=True)
        if isinstance(result, BaseModel)
        else result
    )


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"


__all__ = ["session_routes"]
