"""An async client of Jupyter Kernel Gateway's REST API."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp

from nbkube.engine.connection import KernelConnection
from nbkube.engine.errors import (
    UNREACHABLE,
    GatewayError,
    GatewayUnavailable,
    KernelNotFound,
    error_for_status,
)
from nbkube.engine.outputs import message_limit

KernelModel = dict[str, Any]


class GatewayClient:
    """REST client of one gateway, and the factory of websocket connections to its kernels.

    Use as `async with GatewayClient(url, token) as client:`. Every request is bounded by
    request_timeout; an unreachable gateway raises GatewayUnavailable, a wrong token
    AuthenticationError.

    max_msg_size bounds one websocket message (by default message_limit() of the default OutputLimits:
    the cell cap plus headroom). With other caps, pass message_limit(limits). A larger message is refused
    before it is buffered: the connection reports it to the running cell, which marks its output, and
    reconnects.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        request_timeout: float = 30.0,
        reconnect_timeout: float = 10.0,
        heartbeat: float | None = 10.0,
        max_msg_size: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.request_timeout = request_timeout
        self.reconnect_timeout = reconnect_timeout
        self.heartbeat = heartbeat
        self.max_msg_size = max_msg_size if max_msg_size is not None else message_limit()
        self._session: aiohttp.ClientSession | None = None
        self._cleanups: set[asyncio.Future[None]] = set()  # kernels deleted after a cancelled start

    @property
    def ws_base_url(self) -> str:
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url[len("https://") :]
        return "ws://" + self.base_url.removeprefix("http://")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            )
        return self._session

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=self.request_timeout)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, json_body: Any = None, expect: int = 200) -> Any:
        what = f"{method} {path}"
        try:
            async with self.session.request(method, self.base_url + path, json=json_body) as response:
                body = await response.text()
                if response.status != expect:
                    raise error_for_status(response.status, body, what)
                return json.loads(body) if body else None
        except UNREACHABLE as e:
            raise GatewayUnavailable(f"{what}: gateway {self.base_url} unreachable: {e!r}") from e

    async def start_kernel(self, name: str | None = None, env: dict[str, str] | None = None) -> KernelModel:
        """POST /api/kernels. Only KERNEL_* keys of env (or those in KG_ENV_WHITELIST) reach the kernel."""
        body: dict[str, Any] = {}
        if name:
            body["name"] = name
        if env:
            body["env"] = env
        starting = asyncio.ensure_future(self.request("POST", "/api/kernels", json_body=body, expect=201))
        try:
            model: KernelModel = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # Cancelled while the gateway starts it: the kernel would be left running with nobody knowing
            # its id. The request goes on and the kernel is deleted once it answers (close() waits).
            cleanup = asyncio.ensure_future(self._delete_when_started(starting))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            raise
        return model

    async def _delete_when_started(self, starting: asyncio.Future[Any]) -> None:
        try:
            model = await starting
        except Exception:
            return  # no kernel was started
        with contextlib.suppress(Exception):
            await self.delete_kernel(str(model["id"]))

    async def list_kernels(self) -> list[KernelModel]:
        kernels: list[KernelModel] = await self.request("GET", "/api/kernels")
        return kernels

    async def get_kernel(self, kernel_id: str) -> KernelModel:
        model: KernelModel = await self.request("GET", f"/api/kernels/{kernel_id}")
        return model

    async def interrupt_kernel(self, kernel_id: str) -> None:
        await self.request("POST", f"/api/kernels/{kernel_id}/interrupt", expect=204)

    async def restart_kernel(self, kernel_id: str) -> KernelModel:
        """Restart (state lost). The gateway answers before the new kernel is ready; a kernel in the
        middle of an automatic restart (it just died) answers 500 for a moment, which is retried."""
        model: KernelModel = await self._past_autorestart(
            kernel_id, lambda: self.request("POST", f"/api/kernels/{kernel_id}/restart")
        )
        return model

    async def delete_kernel(self, kernel_id: str, *, missing_ok: bool = True) -> None:
        """DELETE the kernel (retried past an automatic restart, as restart_kernel is)."""
        try:
            await self._past_autorestart(
                kernel_id, lambda: self.request("DELETE", f"/api/kernels/{kernel_id}", expect=204)
            )
        except KernelNotFound:
            if not missing_ok:
                raise

    async def _past_autorestart(self, kernel_id: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call`, again while the gateway answers 5xx, for up to request_timeout: the gateway's
        restarter holds a kernel that just died for a moment, and refuses it meanwhile. A kernel the
        gateway no longer has is KernelNotFound at once (a restart of one answers 500, not 404)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while True:
            try:
                return await call()
            except GatewayError as e:  # (KernelNotFound is a 404: raised at once)
                if (e.status or 0) < 500 or loop.time() > deadline:
                    raise
                await self.get_kernel(kernel_id)  # KernelNotFound when it is gone
                await asyncio.sleep(0.2)

    # Short names, as the operator calls them.
    interrupt = interrupt_kernel
    restart = restart_kernel
    delete = delete_kernel

    async def connect(
        self,
        kernel_id: str,
        session_id: str | None = None,
        *,
        resume_msg_ids: tuple[str, ...] = (),
        delivered_msg_ids: tuple[str, ...] = (),
    ) -> KernelConnection:
        """Open the kernel's websocket. Reusing a previous session_id makes the gateway replay what it
        buffered while nobody was connected; pass the msg_ids of in-flight executions in resume_msg_ids so
        their replayed messages are kept for NotebookExecutor.resume_cell. Resume right away: those
        subscriptions are bounded, and while one is full and unread the connection reads nothing else.
        Messages with `delivered_msg_ids` (a previous connection had them) are dropped if sent again."""
        connection = KernelConnection(self, kernel_id, session_id)
        connection.mark_delivered(delivered_msg_ids)
        for msg_id in resume_msg_ids:
            connection.subscribe(msg_id)
        await connection.open()
        return connection
