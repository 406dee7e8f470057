"""The gateway's direct send to a kernel socket (nbkube.gateway.connection.send_direct) never leaves the
stream blind to a message that arrived as the request went out (0MQ descriptors are edge-triggered)."""

from __future__ import annotations

import asyncio
import time

import zmq
from jupyter_client.session import DELIM, Session
from nbkube.gateway.connection import send_direct
from zmq.eventloop.zmqstream import ZMQStream


def _wait_readable(socket: zmq.Socket[bytes], timeout: float = 10.0) -> None:
    """Blocks (the event loop does not run) until a message waits on the socket. Reading the socket's
    events takes the descriptor's edge, as a send would: the stream's handler will not be woken for it."""
    deadline = time.monotonic() + timeout
    while not socket.get(zmq.EVENTS) & zmq.POLLIN:
        assert time.monotonic() < deadline, "the message never reached the socket"
        time.sleep(0.001)


async def test_a_reply_that_arrived_as_a_request_was_sent_directly_is_still_delivered() -> None:
    context = zmq.Context()
    kernel = context.socket(zmq.ROUTER)
    client = context.socket(zmq.DEALER)
    try:
        client.setsockopt(zmq.IDENTITY, b"client")
        port = kernel.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
        client.send(b"hello")
        assert kernel.poll(10_000), "the client never connected"
        assert kernel.recv_multipart() == [b"client", b"hello"]

        stream = ZMQStream(client)
        received: list[list[bytes]] = []
        arrived = asyncio.Event()

        def on_recv(message: list[bytes]) -> None:
            received.append(message)
            arrived.set()

        stream.on_recv(on_recv)
        await asyncio.sleep(0)  # the stream's handler is registered

        kernel.send_multipart([b"client", b"reply-1"])
        _wait_readable(client)
        send_direct(Session(key=b""), stream, [b"request-2"])

        await asyncio.wait_for(arrived.wait(), 10)
        assert received == [[b"reply-1"]]
        assert kernel.poll(10_000)
        assert kernel.recv_multipart() == [b"client", DELIM, b"", b"request-2"]  # (no key: no signature)
        stream.close()
    finally:
        client.close(linger=0)
        kernel.close(linger=0)
        context.term()
