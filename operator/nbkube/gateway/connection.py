"""The kernel websocket connection our gateways use: TCP_NODELAY on, iopub rate limit off, direct sends.

Imports only jupyter_server (a dependency of jupyter_kernel_gateway): the kernel image installs this
package without the operator's dependencies.
"""

from __future__ import annotations

from typing import Any

import zmq
from jupyter_client.session import DELIM, Session
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import Bool, default
from zmq.eventloop.zmqstream import ZMQStream

from nbkube.gateway.oversized import (
    FRAMING_BYTES,
    MAX_MESSAGE_PARAMETER,
    MIN_LIMIT,
    message_size,
    shrink,
    split_stream,
)
from nbkube.gateway.recent import RecentMessages

WS_PROTOCOL_V1 = "v1.kernel.websocket.jupyter.org"
# The channels whose recent messages a reconnecting client gets again (outputs and replies; the
# engine drops those it had by msg_id).
REPLAYED_CHANNELS: tuple[str, ...] = ("iopub", "shell", "stdin")


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """Sets TCP_NODELAY on the kernel websocket, by default disables jupyter_server's iopub rate limit,
    hands v1-protocol requests straight to the kernel's socket, and cuts kernel messages larger than
    the client's websocket takes (see nbkube.gateway.oversized) instead of sending them to be refused.

    As shipped, Nagle's algorithm on the server side plus the client's delayed ACK adds ~40 ms to every
    request/reply exchange over the websocket. The rate limit silently drops iopub messages above
    1000 msg/s or 1 MB/s; nbkube's engine caps and spills output itself, so nothing must be dropped
    before it sees it.
    """

    nodelay = Bool(True, config=True, help="Set TCP_NODELAY on the kernel websocket when it opens.")
    cut_oversized = Bool(
        True,
        config=True,
        help="Cut kernel messages larger than the client's websocket takes (the client gives its limit "
        f"as the {MAX_MESSAGE_PARAMETER} query parameter) instead of sending them to be refused.",
    )

    @default("limit_rate")
    def _limit_rate_default(self) -> bool:
        return False

    _client_limit = 0
    """The client's websocket message limit (0: not given, nothing is cut); read when it connects."""

    def connect(self) -> Any:  # (jupyter_server's base says a coroutine; its channels class returns a Future)
        if self.nodelay and self.websocket_handler.ws_connection is not None:
            self.websocket_handler.set_nodelay(True)
        self._client_limit = self._read_client_limit()
        return super().connect()

    def _read_client_limit(self) -> int:
        try:
            value = int(self.websocket_handler.get_query_argument(MAX_MESSAGE_PARAMETER, "0"))
        except (ValueError, AttributeError):
            return 0
        return max(value, MIN_LIMIT) if value > 0 else 0

    _recent: RecentMessages | None = None
    """What this connection wrote lately (see nbkube.gateway.recent); put back for the next client."""

    def handle_outgoing_message(self, stream: Any, outgoing_msg: list[Any]) -> None:
        limit = self._client_limit
        oversized = limit and message_size(outgoing_msg) + FRAMING_BYTES > limit
        channel = stream if isinstance(stream, str) else getattr(stream, "channel", None)
        # (A message the client refuses as it is is not kept: sent again, it would be refused again.)
        kept = not oversized or self.cut_oversized
        if kept and channel in REPLAYED_CHANNELS and self.subprotocol == WS_PROTOCOL_V1:
            if self._recent is None:
                self._recent = RecentMessages()
            self._recent.add(channel, outgoing_msg)
        if oversized and self.cut_oversized and self.subprotocol == WS_PROTOCOL_V1:
            idents, fed = self.session.feed_identities(outgoing_msg)
            parts = fed[1:]  # [header, parent, metadata, content, *buffers]: v1 sends no signature
            pieces = (
                split_stream(parts, self.session.unpack, self.session.pack, limit)
                if len(parts) >= 4
                else None
            )
            if pieces is not None:
                self.log.info(
                    "kernel %s: a %d-byte stream message sent as %d for the client's websocket limit",
                    self.kernel_id,
                    message_size(parts),
                    len(pieces),
                )
                for piece in pieces:
                    super().handle_outgoing_message(
                        stream, [*idents, DELIM, self.session.sign(piece), *piece]
                    )
                return
            cut = shrink(parts, self.session.unpack, self.session.pack, limit) if len(parts) >= 4 else None
            if cut is not None:
                self.log.warning(
                    "kernel %s: a %d-byte message cut to %d bytes for the client's websocket limit",
                    self.kernel_id,
                    message_size(parts),
                    message_size(cut),
                )
                outgoing_msg = [*idents, DELIM, self.session.sign(cut), *cut]
        super().handle_outgoing_message(stream, outgoing_msg)

    def disconnect(self) -> Any:
        """As jupyter_server's, and then what was written in the last seconds goes in front of the
        replay buffer it starts for this session: messages written into the dying websocket reach the
        reconnecting client too (it drops those it had by msg_id)."""
        result = super().disconnect()
        recent, self._recent = self._recent, None
        buffers = getattr(self.multi_kernel_manager, "_kernel_buffers", None)
        info = buffers.get(self.kernel_id) if isinstance(buffers, dict) else None
        if recent is not None and info and info.get("session_key") == self.session_key:
            info.setdefault("buffer", [])[0:0] = recent.take()
        return result

    def handle_incoming_message(self, incoming_msg: Any) -> None:
        # A ZMQStream queues every send for its next POLLOUT event: one more event-loop turn between the
        # websocket and the kernel for each request. When nothing is queued ahead (so order is kept) and
        # the socket takes the message without blocking, send it now; otherwise go the stream's way.
        if (
            self.subprotocol != WS_PROTOCOL_V1
            or not self.channels
            or self.multi_kernel_manager.allowed_message_types
        ):
            super().handle_incoming_message(incoming_msg)
            return
        channel, msg_list = deserialize_msg_from_ws_v1(incoming_msg)
        stream = self.channels.get(channel)
        if stream is None or stream.closed() or stream.sending() or not can_resync(stream):
            super().handle_incoming_message(incoming_msg)
            return
        send_direct(self.session, stream, msg_list)


def can_resync(stream: ZMQStream) -> bool:
    return callable(getattr(stream, "_rebuild_io_state", None))


def send_direct(session: Session, stream: ZMQStream, msg_list: list[Any]) -> None:
    """Sends on the stream's socket now when it takes the message without blocking (else queues it on
    the stream), then has the stream look at its socket again.

    A 0MQ socket's file descriptor is edge-triggered, and any operation on the socket, a send included,
    may take the edge of a message that has just arrived: the stream, waiting for the descriptor, would
    then never read that message nor any after it (the pipe is not empty, so no new edge comes). That
    left the kernel's shell replies unread for good when a request went out as a reply came in (a run
    reattached after an operator restart waited forever). The stream re-checks its socket after its
    own sends; this does the same after ours."""
    try:
        session.send_raw(stream.socket, msg_list, flags=zmq.NOBLOCK)
    except zmq.Again:
        session.send_raw(stream, msg_list)  # type: ignore[arg-type]  # (a stream queues it)
        return
    stream._rebuild_io_state()  # (pyzmq's own re-check of the socket's events after a send)
