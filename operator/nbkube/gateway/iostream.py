"""The stdout/stderr stream nbkube's IPython kernels run with (`IPKernelApp.outstream_class`).

Kernel-side module: imported only inside kernels, by kernels the gateway starts with its own Python
(see BatchKernelManager); imports the standard library and ipykernel only.
"""

from __future__ import annotations

import codecs
import os
import select
import sys
import threading
from typing import Any

from ipykernel.iostream import OutStream

# ipykernel's own read size for the captured file descriptor.
PIPE_READ_BYTES = 1 << 14

# The internals this stream relies on (ipykernel 6.29 to 7.x). Without one, flush is the stock one.
_INTERNALS = ("_buffers", "_buffer_lock", "_flush_pending", "_should_watch", "_setup_stream_redirects")


class BatchOutStream(OutStream):
    """OutStream whose flush is exact about file-descriptor output and free when there is nothing to send.

    ipykernel captures what a cell writes to fd 1 and 2 (C extensions, subprocesses, `os.write`) with a
    thread that reads a pipe. Before each reply the kernel flushes stdout and stderr: the stock flush hands
    a flush and an event to the IO thread and waits for both, two thread round trips per stream per cell
    even when nothing was written (about 1 ms per cell on a busy 2-core node). It also does not look at
    the pipe, so bytes the cell wrote to the fd just before it ended can reach the stream after the idle
    status, and a client that finishes the cell at idle never sees them.

    Here flush first forwards, on the calling thread, whatever the pipe holds (the watcher thread reads
    the pipe only under the same lock, so after that everything the cell wrote to the fd is in the
    stream's buffers), then does the stock flush only when something is buffered, scheduled or being
    sent by the IO thread. The IO thread sends every iopub message in order, so output still precedes
    the idle status.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._pipe_lock = threading.Lock()
        self._closing = False
        self._io_flushes = 0
        self._drain_poller: select.poll | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        super().__init__(*args, **kwargs)
        self._exact = all(hasattr(self, name) for name in _INTERNALS)

    def _watch_pipe_fd(self) -> None:
        if self._fid is None:
            return
        poller = select.poll()
        poller.register(self._fid, select.POLLIN)
        try:
            while True:
                poller.poll()
                with self._pipe_lock:
                    if not self._forward_pipe(poller):
                        return
        except Exception:
            self._exc = sys.exc_info()

    def _forward_pipe(self, poller: select.poll) -> bool:
        """Forwards what the pipe holds now, without blocking; False once it is closed or unwatched.

        Call with `_pipe_lock` held: a read happens only after poll says data is there, and nobody else
        reads the pipe meanwhile, so it never blocks.
        """
        fid = self._fid
        assert fid is not None  # (watched only while the pipe is open)
        while poller.poll(0):
            data = os.read(fid, PIPE_READ_BYTES)
            if not data or not self._should_watch:
                return False
            self.write(self._decoder.decode(data))
            os.write(self._original_stdstream_copy, data)
        return True

    def _drain_pipe(self) -> None:
        with self._pipe_lock:
            # close() wakes the watcher with one byte; that byte is the watcher's to read.
            if self._closing or not self._should_watch:
                return
            if self._drain_poller is None:  # one poll object per reader: the watcher has its own
                assert self._fid is not None
                self._drain_poller = select.poll()
                self._drain_poller.register(self._fid, select.POLLIN)
            self._forward_pipe(self._drain_poller)

    def _idle(self) -> bool:
        """Nothing buffered, no timed flush scheduled, no flush running on the IO thread.

        Checked in this order: the IO thread counts a flush as running before it empties the buffers.
        """
        with self._buffer_lock:
            if any(buffer.tell() for buffer in self._buffers.values()):
                return False
        return not self._flush_pending and self._io_flushes == 0

    def _on_io_thread(self) -> bool:
        thread = self.pub_thread.thread if self.pub_thread is not None else None
        return thread is None or not thread.is_alive() or thread.ident == threading.get_ident()

    def flush(self) -> None:
        if not self._exact or not self._is_master_process() or self._on_io_thread():
            super().flush()
            return
        if self._fid is not None:
            self._drain_pipe()
        if not self._idle():
            super().flush()

    def _flush(self) -> None:
        self._io_flushes += 1
        try:
            super()._flush()
        finally:
            self._io_flushes -= 1

    def close(self) -> None:
        with self._pipe_lock:
            self._closing = True
        super().close()
