"""The kernel websocket connection our gateways use: TCP_NODELAY on, iopub rate limit off, direct sends.

Imports only jupyter_server (a dependency of jupyter_kernel_gateway): the kernel image installs this
package without the operator's dependencies.
"""

from __future__ import annotations

import asyncio
from typing import Any

import zmq
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import Bool, default

WS_PROTOCOL_V1 = "v1.kernel.websocket.jupyter.org"


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """Sets TCP_NODELAY on the kernel websocket, by default disables jupyter_server's iopub rate limit,
    and hands v1-protocol requests straight to the kernel's socket.

    As shipped, Nagle's algorithm on the server side plus the client's delayed ACK adds ~40 ms to every
    request/reply exchange over the websocket. The rate limit silently drops iopub messages above
    1000 msg/s or 1 MB/s; nbkube's engine caps and spills output itself, so nothing must be dropped
    before it sees it.
    """

    nodelay = Bool(True, config=True, help="Set TCP_NODELAY on the kernel websocket when it opens.")

    @default("limit_rate")
    def _limit_rate_default(self) -> bool:
        return False

    def connect(self) -> asyncio.Future[None] | None:
        if self.nodelay and self.websocket_handler.ws_connection is not None:
            self.websocket_handler.set_nodelay(True)
        return super().connect()

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
        if stream is None or stream.closed() or stream.sending():
            super().handle_incoming_message(incoming_msg)
            return
        try:
            self.session.send_raw(stream.socket, msg_list, flags=zmq.NOBLOCK)
        except zmq.Again:
            self.session.send_raw(stream, msg_list)
