"""nbkube's Jupyter Kernel Gateway: tuned configuration and launcher (`python -m nbkube.gateway`).

This package runs inside the kernel image: it may import only the stdlib, traitlets and the kernel-side
packages (jupyter_kernel_gateway, jupyter_server, ipykernel), never the operator's dependencies.
"""

from nbkube.gateway.config import TIME_TO_DEAD_SECONDS, tuned_config

__all__ = ["TIME_TO_DEAD_SECONDS", "tuned_config"]
