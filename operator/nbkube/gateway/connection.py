"""The kernel websocket connection our gateways use: TCP_NODELAY on, iopub rate limit off.

Imports only jupyter_server (a dependency of jupyter_kernel_gateway): the kernel image installs this
package without the operator's dependencies.
"""

from __future__ import annotations

import asyncio

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
from traitlets import Bool, default


class NoDelayWebsocketConnection(ZMQChannelsWebsocketConnection):
    """Sets TCP_NODELAY on the kernel websocket and, by default, disables jupyter_server's iopub rate limit.

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
