"""A kernel's websocket channels through the gateway, with routing by parent msg_id and reconnects."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import aiohttp

from nbkube.engine.errors import UNREACHABLE, EngineError, GatewayUnavailable, error_for_status
from nbkube.engine.protocol import (
    WS_PROTOCOL_V1,
    Message,
    decode_binary,
    decode_text,
    decode_v1,
    encode,
    encode_v1,
    make_message,
    new_id,
    parent_id,
)
from nbkube.gateway.oversized import MAX_MESSAGE_PARAMETER

if TYPE_CHECKING:
    from nbkube.engine.client import GatewayClient

log = logging.getLogger(__name__)

KERNEL_LOST_STATES = frozenset({"restarting", "dead"})
SHELL_CHECK_TIMEOUT = 5.0
DELIVERED_IDS = 4096
"""How many delivered msg_ids a connection remembers to drop what a gateway sends again."""
"""After the reconnect that follows a refused message: how long a shell kernel_info may take."""
_MESSAGE_SIZE = re.compile(r"Message size (\d+)")


def _too_big(frame: aiohttp.WSMessage) -> bool:
    error = frame.data
    return isinstance(error, aiohttp.WebSocketError) and error.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


class Subscription:
    """The messages of one request (by parent msg_id), in arrival order.

    Bounded: when `limit` messages wait unread, the websocket reader waits too, so a chatty kernel is
    slowed down by TCP back-pressure instead of filling the engine's memory.
    """

    def __init__(self, msg_id: str, limit: int = 16) -> None:
        self.msg_id = msg_id
        self.limit = limit
        self._items: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    @staticmethod
    def _wake(future: asyncio.Future[None] | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.limit

    def waiting(self) -> tuple[Message, ...]:
        """The messages queued and not yet read (a look, not a read)."""
        return tuple(self._items)

    def release(self) -> None:
        """Let a reader blocked on this subscription's bound go on (it is no longer read)."""
        self._wake(self._room)

    def push(self, message: Message) -> None:
        """Append regardless of the bound (for the few messages the engine itself injects)."""
        self._items.append(message)
        self._wake(self._waiter)

    async def put(self, message: Message) -> None:
        while len(self._items) >= self.limit and self._error is None:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        self.push(message)

    def fail(self, error: BaseException) -> None:
        """Raise `error` from get() once the queued messages are consumed."""
        if self._error is None:
            self._error = error
        self._wake(self._waiter)
        self._wake(self._room)

    async def get(self, wait: float | None = None) -> Message | None:
        """The next message, or None after `wait` seconds without one."""
        while True:
            if self._items:
                message = self._items.popleft()
                if len(self._items) < self.limit:
                    self._wake(self._room)
                return message
            if self._error is not None:
                raise self._error
            if wait is not None and wait <= 0:
                return None
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            handle = loop.call_later(wait, self._wake, waiter) if wait is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if handle is not None:
                    handle.cancel()
            if not self._items and self._error is None:
                return None


class KernelConnection:
    """The shell, control, iopub and stdin channels of one kernel over one websocket.

    Messages are routed by parent msg_id to subscriptions; others are dropped, except an iopub status
    `restarting`/`dead` (the gateway's restarter saying the kernel died), which every subscription gets.
    When the websocket drops, it is reopened with the same session_id so the gateway replays what it
    buffered; if that fails within the client's reconnect_timeout, subscriptions fail with
    GatewayUnavailable (KernelNotFound if the kernel is gone, AuthenticationError if the token is refused).

    A message larger than the client's max_msg_size is refused from its frame header (nothing of it is
    buffered) and the websocket closes with 1009. Every subscription then gets
    `{"nbkube": "oversized", "seq": n, "size": bytes, "limit": max_msg_size}` and the connection
    reconnects. The gateway does not send the refused message again: it was taken off its replay buffer
    before it was written (replays happen once), but what it wrote after it on the dead websocket is lost.
    """

    def __init__(self, client: GatewayClient, kernel_id: str, session_id: str | None = None) -> None:
        self.client = client
        self.kernel_id = kernel_id
        self.session_id = session_id or new_id()
        self.kernel_session: str | None = None
        """The kernel process's own session id (from its messages); it changes when the kernel restarts."""
        self.kernel_lost_events = 0
        self.reconnects = 0
        self.oversized_messages = 0
        """Messages refused for exceeding the client's max_msg_size."""
        self.shell_resets = 0
        self._shell_check: asyncio.Task[None] | None = None
        self._subscriptions: dict[str, Subscription] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._failure: BaseException | None = None
        self._stay_away_until = 0.0
        self._v1 = False
        self._delivered: collections.OrderedDict[str, None] = collections.OrderedDict()
        """msg_ids delivered lately: a gateway sends what it wrote just before a drop again."""

    @property
    def url(self) -> str:
        # The limit lets an nbkube gateway cut a message the websocket would refuse (other gateways
        # ignore the parameter; the refusal is handled too, see on_oversized).
        return (
            f"{self.client.ws_base_url}/api/kernels/{self.kernel_id}/channels?session_id={self.session_id}"
            f"&{MAX_MESSAGE_PARAMETER}={self.client.max_msg_size}"
        )

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    @property
    def closed(self) -> bool:
        return self._closing or self._failure is not None

    @property
    def sends_buffers(self) -> bool:
        """Whether messages sent carry binary buffers (the v1 websocket protocol) rather than JSON only."""
        return self._v1

    async def __aenter__(self) -> KernelConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._ws = await self._ws_connect()
        self._connected.set()
        self._reader = asyncio.create_task(self._read_loop(), name=f"kernel-ws-{self.kernel_id}")

    async def _ws_connect(self) -> aiohttp.ClientWebSocketResponse:
        what = f"websocket of kernel {self.kernel_id}"
        try:
            async with asyncio.timeout(self.client.request_timeout):
                ws = await self.client.session.ws_connect(
                    self.url,
                    protocols=(WS_PROTOCOL_V1,),
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                    heartbeat=self.client.heartbeat,
                    max_msg_size=self.client.max_msg_size,
                    autoclose=True,
                    autoping=True,
                )
                self._v1 = ws.protocol == WS_PROTOCOL_V1
                return ws
        except aiohttp.WSServerHandshakeError as e:
            raise error_for_status(e.status, e.message, what) from e
        except UNREACHABLE as e:
            raise GatewayUnavailable(f"{what}: gateway {self.client.base_url} unreachable: {e!r}") from e

    async def _read_loop(self) -> None:
        try:
            while True:
                ws = self._ws
                assert ws is not None
                frame = await ws.receive()
                if frame.type is aiohttp.WSMsgType.TEXT:
                    await self._deliver(decode_text(frame.data))
                elif frame.type is aiohttp.WSMsgType.BINARY:
                    await self._deliver(decode_v1(frame.data) if self._v1 else decode_binary(frame.data))
                elif self._closing:
                    return
                elif frame.type is aiohttp.WSMsgType.ERROR and _too_big(frame):
                    self._oversized(str(frame.data))
                    self._connected.clear()
                    await self._reconnect()
                    self._start_shell_check()
                else:
                    log.info(
                        "websocket of kernel %s lost (%s); reconnecting", self.kernel_id, frame.type.name
                    )
                    self._connected.clear()
                    await self._reconnect()
        except asyncio.CancelledError:
            raise
        except EngineError as e:
            self._fail(e)
        except Exception as e:
            self._fail(GatewayUnavailable(f"websocket of kernel {self.kernel_id} failed: {e!r}"))

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        if self._stay_away_until > loop.time():
            await asyncio.sleep(self._stay_away_until - loop.time())
        deadline = loop.time() + self.client.reconnect_timeout
        delay = 0.05
        while True:
            if self._ws is not None:
                await self._ws.close()
            try:
                self._ws = await self._ws_connect()
            except GatewayUnavailable as e:
                if loop.time() + delay > deadline or self._closing:
                    raise GatewayUnavailable(
                        f"lost the websocket of kernel {self.kernel_id} and could not reconnect within "
                        f"{self.client.reconnect_timeout:g}s: {e}"
                    ) from e
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            else:
                self.reconnects += 1
                self._connected.set()
                return

    def mark_delivered(self, msg_ids: Iterable[str]) -> None:
        """Messages with these msg_ids are not delivered (a previous connection had them: after an
        operator restart, its journal says which)."""
        for msg_id in msg_ids:
            self._remember(msg_id)

    def _remember(self, msg_id: str) -> bool:
        """False when `msg_id` was delivered already."""
        if msg_id in self._delivered:
            return False
        self._delivered[msg_id] = None
        if len(self._delivered) > DELIVERED_IDS:
            self._delivered.popitem(last=False)
        return True

    async def _deliver(self, message: Message) -> None:
        msg_id = (message.get("header") or {}).get("msg_id")
        if msg_id and not self._remember(msg_id):
            return  # sent again by the gateway after a reconnect: we have it
        subscription = self._subscriptions.get(parent_id(message))  # type: ignore[arg-type]
        if subscription is not None:
            self.kernel_session = message["header"].get("session") or self.kernel_session
            if not subscription.full:
                subscription.push(message)
            else:
                await subscription.put(message)
        elif (
            message.get("channel") == "iopub"
            and message["header"].get("msg_type") == "status"
            and message["content"].get("execution_state") in KERNEL_LOST_STATES
        ):
            self.kernel_lost_events += 1
            for subscription in list(self._subscriptions.values()):
                subscription.push(message)

    def _oversized(self, reason: str) -> None:
        self.oversized_messages += 1
        found = _MESSAGE_SIZE.search(reason)
        limit = self.client.max_msg_size
        log.warning(
            "kernel %s sent a message over the websocket limit of %d bytes (%s); reconnecting",
            self.kernel_id,
            limit,
            reason,
        )
        event = {
            "nbkube": "oversized",
            "seq": self.oversized_messages,
            "size": int(found.group(1)) if found else None,
            "limit": limit,
        }
        for subscription in list(self._subscriptions.values()):
            subscription.push(event)

    def _start_shell_check(self) -> None:
        if self._shell_check is None or self._shell_check.done():
            self._shell_check = asyncio.create_task(self._check_shell(), name=f"shell-check-{self.kernel_id}")

    async def _check_shell(self) -> None:
        """A gateway may leave the websocket that replaces one closed with 1009 without shell replies
        (iopub and control still flow): nbkube's own gateway images before its direct sends re-checked
        the kernel socket did, about once in 20 such reconnects (see nbkube.gateway.connection.send_direct).
        A shell kernel_info tells; without its reply in SHELL_CHECK_TIMEOUT (a long-running cell delays
        it too), reconnect once more, which restores them (the gateway's buffering re-arms the stream)."""
        try:
            await self.kernel_info(reply_timeout=SHELL_CHECK_TIMEOUT, channel="shell")
        except TimeoutError:
            if not self.closed:
                log.warning("no shell reply from kernel %s after a reconnect; reconnecting", self.kernel_id)
                self.shell_resets += 1
                await self.drop_websocket()
        except EngineError:
            pass

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        for subscription in list(self._subscriptions.values()):
            subscription.fail(error)

    def subscribe(self, msg_id: str) -> Subscription:
        """Route the messages whose parent is msg_id (returns the existing subscription if any)."""
        subscription = self._subscriptions.get(msg_id)
        if subscription is None:
            subscription = self._subscriptions[msg_id] = Subscription(msg_id)
            if self._failure is not None:
                subscription.fail(self._failure)
        return subscription

    def unsubscribe(self, msg_id: str) -> None:
        subscription = self._subscriptions.pop(msg_id, None)
        if subscription is not None:
            subscription.release()

    def route(self, msg_id: str, subscription: Subscription) -> None:
        """Deliver the messages whose parent is msg_id to an existing subscription too."""
        self._subscriptions[msg_id] = subscription

    def subscription(self, msg_id: str) -> Subscription | None:
        return self._subscriptions.get(msg_id)

    @property
    def max_msg_size(self) -> int:
        """The largest websocket message this connection takes."""
        return self.client.max_msg_size

    async def model(self) -> dict[str, Any]:
        """The gateway's model of this kernel (GET /api/kernels/<id>)."""
        return await self.client.get_kernel(self.kernel_id)

    async def restart_kernel(self) -> None:
        """A fresh kernel process (state lost), reached through a fresh websocket (see reconnect)."""
        await self.client.restart_kernel(self.kernel_id)
        await self.reconnect()

    async def reconnect(self) -> None:
        """A fresh websocket, whose channels the gateway opens on the kernel's ports as they are now.

        After a kernel died, what the gateway's restarter brought back is reached this way (without a
        second restart racing the restarter's). A websocket opened before a restart that moved the
        kernel's ports keeps its channels on the old ones: jupyter_server moves them only when a client
        reconnects with its session_id (nbkube's gateway keeps the ports, see gateway/config.py; a
        stock one does not)."""
        await self.drop_websocket()

    async def send_message(self, message: Message) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closing:
            raise EngineError(f"connection to kernel {self.kernel_id} is closed")
        if not self._connected.is_set():
            try:
                async with asyncio.timeout(self.client.reconnect_timeout + self.client.request_timeout):
                    await self._connected.wait()
            except TimeoutError:
                raise self._failure or GatewayUnavailable(
                    f"websocket of kernel {self.kernel_id} not reconnected"
                ) from None
        assert self._ws is not None
        try:
            if self._v1:
                await self._ws.send_bytes(encode_v1(message))
            else:
                await self._ws.send_str(encode(message))
        except (ConnectionError, aiohttp.ClientError) as e:
            raise GatewayUnavailable(f"sending to kernel {self.kernel_id} failed: {e!r}") from e

    async def send(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: dict[str, Any] | None = None,
        msg_id: str | None = None,
    ) -> Message:
        message = make_message(channel, msg_type, content, self.session_id, parent=parent, msg_id=msg_id)
        await self.send_message(message)
        return message

    async def request(
        self, channel: str, msg_type: str, content: dict[str, Any], *, reply_timeout: float | None = None
    ) -> Message:
        """Send a request and return its reply on the same channel (other messages of it are dropped).

        Raises TimeoutError after `reply_timeout` seconds without the reply."""
        msg_id = new_id()
        subscription = self.subscribe(msg_id)
        try:
            await self.send(channel, msg_type, content, msg_id=msg_id)
            loop = asyncio.get_running_loop()
            deadline = None if reply_timeout is None else loop.time() + reply_timeout
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                message = await subscription.get(remaining)
                if message is None:
                    raise TimeoutError(
                        f"no {msg_type} reply from kernel {self.kernel_id} in {reply_timeout}s"
                    )
                if message.get("channel") == channel and message["header"]["msg_type"].endswith("_reply"):
                    return message
        finally:
            self.unsubscribe(msg_id)

    async def kernel_info(
        self, *, reply_timeout: float | None = 30.0, channel: str = "shell"
    ) -> dict[str, Any]:
        reply = await self.request(channel, "kernel_info_request", {}, reply_timeout=reply_timeout)
        content: dict[str, Any] = reply["content"]
        return content

    async def until_answering(self, timeout: float) -> dict[str, Any]:
        """The kernel's kernel_info, once both its shell reply and an iopub message of it came, asked
        again each second until they do (as jupyter_server's nudge does). A kernel the gateway is still
        (re)starting can miss a request sent before its sockets were up, and what it publishes before
        the gateway's iopub subscription reached it is lost: an execution sent then waited forever for
        its outputs. TimeoutError after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            msg_id = new_id()
            subscription = self.subscribe(msg_id)
            reply: Message | None = None
            published = False
            try:
                await self.send("shell", "kernel_info_request", {}, msg_id=msg_id)
                attempt_end = min(deadline, loop.time() + 1.0)
                while reply is None or not published:
                    message = await subscription.get(max(0.0, attempt_end - loop.time()))
                    if message is None:
                        break
                    if message.get("channel") == "iopub":
                        published = True
                    elif message["header"]["msg_type"] == "kernel_info_reply":
                        reply = message
            finally:
                self.unsubscribe(msg_id)
            if reply is not None and published:
                content: dict[str, Any] = reply["content"]
                return content
            if loop.time() >= deadline:
                raise TimeoutError(f"kernel {self.kernel_id} did not answer in {timeout:g}s")

    async def interrupt(self) -> None:
        await self.client.interrupt_kernel(self.kernel_id)

    async def close(self) -> None:
        """Close the websocket (the kernel keeps running; the gateway buffers for this session_id)."""
        self._closing = True
        if self._shell_check is not None:
            self._shell_check.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        for subscription in list(self._subscriptions.values()):
            subscription.fail(EngineError(f"connection to kernel {self.kernel_id} closed"))

    async def drop_websocket(self, *, stay_away: float = 0.0) -> None:
        """Close the current websocket as a network failure would; the connection reconnects with the
        same session_id after `stay_away` seconds. For tests of the reconnect path, and to reset a
        websocket that stopped delivering shell replies."""
        self._stay_away_until = asyncio.get_running_loop().time() + stay_away
        self._connected.clear()  # what is sent meanwhile waits for the new websocket
        if self._ws is not None:
            await self._ws.close()
