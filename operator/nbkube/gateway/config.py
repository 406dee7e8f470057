"""nbkube's tuning of Jupyter Kernel Gateway, as a traitlets Config.

Kernel-side module: stdlib, traitlets and the gateway's own packages only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from traitlets.config import Config

CONNECTION_CLASS = "nbkube.gateway.connection.NoDelayWebsocketConnection"
KERNEL_MANAGER_CLASS = "nbkube.gateway.kernels.TunedMappingKernelManager"

# How often the restarter polls the kernel process. A dead kernel is reported (iopub status
# "restarting") at most this long after it died; the poll is a cheap waitpid, so 0.25 s costs nothing.
TIME_TO_DEAD_SECONDS = 0.25


def tuned_config(environ: Mapping[str, str] | None = None) -> Config:
    """The configuration every nbkube gateway runs with; command-line options override it.

    - TCP_NODELAY on the kernel websocket and no iopub rate limit (see NoDelayWebsocketConnection);
    - IPython kernels keep their history in memory, and activity tracking reads only the JSON it needs
      (see TunedMappingKernelManager);
    - a dead kernel is detected within TIME_TO_DEAD_SECONDS, and restarted on the ports it had: by
      default a kernel that dies in its first 10 seconds comes back on new random ports, while a
      websocket already open keeps its channels on the old ones (jupyter_server moves them only when
      a client reconnects), so whoever held the kernel could not reach it again;
    - kernel listing enabled (the operator finds reusable kernels by listing);
    - auth token from KG_AUTH_TOKEN (read by the gateway itself);
    - bind address from KG_IP, else POD_IP (gateway pods bind their pod IP), else 127.0.0.1;
    - a taken port is an error instead of a silent move to a random port.
    """
    env = os.environ if environ is None else environ
    c = Config()
    c.KernelGatewayApp.kernel_websocket_connection_class = CONNECTION_CLASS
    c.KernelGatewayApp.kernel_manager_class = KERNEL_MANAGER_CLASS
    if not env.get("KG_PORT_RETRIES"):
        c.KernelGatewayApp.port_retries = 0
    if not env.get("KG_IP") and env.get("POD_IP"):
        c.KernelGatewayApp.ip = env["POD_IP"]
    c.JupyterWebsocketPersonality.list_kernels = True
    c.KernelRestarter.time_to_dead = TIME_TO_DEAD_SECONDS
    c.KernelRestarter.random_ports_until_alive = False
    # Belt and braces next to the connection class default: whoever configures the stock class
    # still gets no rate limit.
    c.ZMQChannelsWebsocketConnection.limit_rate = False
    return c
