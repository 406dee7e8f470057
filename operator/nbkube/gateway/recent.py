"""The messages a gateway wrote to a kernel's websocket in the last moments, to send again after a drop.

jupyter_server buffers a kernel's messages for a reconnecting client only from the moment it notices
the websocket closed; what it wrote between the client's death (an operator killed) and that moment
went into a dead connection and is lost. So the gateway keeps what it wrote recently and, when the
websocket closes, puts it in front of the replay buffer: the reconnecting client gets it again and
drops the messages it already had by their msg_id (the engine's KernelConnection and its journal).

Kernel-side module: stdlib only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

RECENT_SECONDS = 3.0
MAX_MESSAGES = 512
MAX_BYTES = 32 * 1024 * 1024


class RecentMessages:
    """(channel, raw zmq parts) written in the last RECENT_SECONDS, bounded in count and bytes."""

    def __init__(
        self,
        seconds: float = RECENT_SECONDS,
        max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: deque[tuple[float, str, list[Any], int]] = deque()
        self._bytes = 0

    def add(self, channel: str, parts: list[Any]) -> None:
        size = sum(len(p) for p in parts)
        if size > self.max_bytes:
            return
        self._items.append((self._clock(), channel, parts, size))
        self._bytes += size
        self._trim()

    def _trim(self) -> None:
        oldest = self._clock() - self.seconds
        while self._items and (
            len(self._items) > self.max_messages or self._bytes > self.max_bytes or self._items[0][0] < oldest
        ):
            _, _, _, size = self._items.popleft()
            self._bytes -= size

    def take(self) -> list[tuple[str, list[Any]]]:
        """What was written in the last RECENT_SECONDS, oldest first; the ring is emptied."""
        self._trim()
        taken = [(channel, parts) for _, channel, parts, _ in self._items]
        self._items.clear()
        self._bytes = 0
        return taken
