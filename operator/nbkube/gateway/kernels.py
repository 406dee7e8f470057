"""The gateway's kernel managers: batch-tuned IPython kernels and cheap activity tracking.

Kernel-side module: imports only jupyter_client, jupyter_server and the gateway's own packages (the
kernel image installs nbkube without the operator's dependencies).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jupyter_client.session import DELIM
from kernel_gateway.services.kernels.manager import (
    KernelGatewayIOLoopKernelManager,
    SeedingMappingKernelManager,
)
from traitlets import List, Unicode

# Options for IPython kernels run as batch notebook kernels:
# - IPython keeps every executed cell in an SQLite file and commits it, from a background thread, after
#   each cell. A run never reads that file again, and on a 2-core node the commit costs about 2 ms of CPU
#   per cell beside the cell itself; in memory, %history still works within the run.
# - ipykernel sleeps 0.5 ms before every execute_reply so that a client which stops reading iopub at the
#   reply still sees the cell's last output. nbkube's engine finishes a cell only on both the reply and
#   the iopub idle status (which follows every output), so for it the sleep is pure latency.
IPYKERNEL_BATCH_ARGUMENTS = ("--HistoryManager.hist_file=:memory:", "--IPythonKernel._execute_sleep=0")

# Options naming nbkube's kernel-side classes (see nbkube.gateway.iostream). They are added only for
# kernels run by the gateway's own interpreter, the one Python where nbkube is sure to be importable.
NBKUBE_KERNEL_ARGUMENTS = ("--IPKernelApp.outstream_class=nbkube.gateway.iostream.BatchOutStream",)


def same_interpreter(command: str, executable: str) -> bool:
    """Whether a kernel command runs the given Python by the same path.

    Not by resolved symlinks: a virtualenv's python links to the base interpreter, which cannot import
    what the virtualenv installed.
    """
    found = shutil.which(command)
    return found is not None and os.path.abspath(found) == os.path.abspath(executable)


def runs_ipykernel(argv: list[str]) -> bool:
    """Whether a kernel spec's argv starts an IPython kernel (only those understand its options)."""
    return any(arg == "ipykernel" or "ipykernel_launcher" in arg for arg in argv)


class BatchKernelManager(KernelGatewayIOLoopKernelManager):
    """Starts IPython kernels with `ipykernel_arguments` appended (other kernels start as specified)."""

    ipykernel_arguments = List(
        Unicode(),
        default_value=list(IPYKERNEL_BATCH_ARGUMENTS),
        config=True,
        help="Extra command-line options for kernels whose spec runs ipykernel; [] starts them as specified.",
    )

    nbkube_kernel_arguments = List(
        Unicode(),
        default_value=list(NBKUBE_KERNEL_ARGUMENTS),
        config=True,
        help="Extra options for IPython kernels run by the gateway's own Python; [] leaves them out.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # jupyter_server sets these once the kernel started; a kernel listed while it starts (another
        # POST /api/kernels counting kernels for KG_MAX_KERNELS) would otherwise make that request 500.
        self.last_activity = datetime.now(UTC)
        self.execution_state = "starting"

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        extra = list(extra_arguments or [])
        ipython = self.kernel_spec is not None and runs_ipykernel(self.kernel_spec.argv)
        if ipython:
            extra += [arg for arg in self.ipykernel_arguments if arg not in extra]
        cmd: list[str] = super().format_kernel_cmd(extra_arguments=extra)
        if ipython and cmd and same_interpreter(cmd[0], sys.executable):
            cmd += [arg for arg in self.nbkube_kernel_arguments if arg not in cmd]
        return cmd


class TunedMappingKernelManager(SeedingMappingKernelManager):
    """The gateway's kernel manager: BatchKernelManager kernels and a cheaper activity watcher.

    jupyter_server's watcher fully deserializes every iopub message a second time (HMAC check, date
    parsing of both headers, then the whole message again for each status), which was about a third of
    the gateway's CPU per cell. This one reads only the JSON it needs and keeps the same bookkeeping:
    `last_activity` on tracked messages, `execution_state` from status messages (idle culling uses both).
    """

    def _kernel_manager_class_default(self) -> str:
        return f"{BatchKernelManager.__module__}.{BatchKernelManager.__qualname__}"

    def start_watching_activity(self, kernel_id: str) -> None:
        kernel = self._kernels[kernel_id]
        kernel.reason = ""
        kernel.last_activity = datetime.now(UTC)
        kernel._activity_stream = kernel.connect_iopub()
        kernel._activity_stream.on_recv(self._activity_recorder(kernel, kernel.session.unpack))

    def _activity_recorder(
        self, kernel: Any, unpack: Callable[[bytes], Any]
    ) -> Callable[[list[bytes]], None]:
        track = self.track_message_type

        def record_activity(msg_list: list[bytes]) -> None:
            try:
                start = msg_list.index(DELIM) + 2  # after the delimiter and the signature
                header, parent = unpack(msg_list[start]), unpack(msg_list[start + 1])
            except (ValueError, IndexError, json.JSONDecodeError):
                self.log.warning("kernel %s: unreadable iopub message ignored", kernel.kernel_id)
                return
            msg_type = header.get("msg_type")
            parent_type = parent.get("msg_type") if isinstance(parent, dict) else None
            if track(msg_type) or track(parent_type) or kernel.execution_state == "busy":
                self.last_kernel_activity = kernel.last_activity = datetime.now(UTC)
            if msg_type != "status":
                return
            try:
                state = unpack(msg_list[start + 3]).get("execution_state")
            except (IndexError, AttributeError, json.JSONDecodeError):
                return
            if track(parent_type):
                kernel.execution_state = state
            elif kernel.execution_state == "starting" and state != "starting":
                kernel.execution_state = "idle"

        return record_activity
