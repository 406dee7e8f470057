"""`python -m nbkube.gateway [--ip IP] [--port PORT] [--KernelGatewayApp.option=value ...]`.

Starts Jupyter Kernel Gateway with nbkube's tuned configuration (nbkube.gateway.config.tuned_config).
Every argument is passed to KernelGatewayApp, so command-line options override the tuning. The auth
token comes from the KG_AUTH_TOKEN environment variable (never from the command line, which `ps` shows).
"""

from __future__ import annotations

import sys

from kernel_gateway.gatewayapp import KernelGatewayApp

from nbkube.gateway.config import tuned_config


def main(argv: list[str] | None = None) -> None:
    KernelGatewayApp.launch_instance(argv=sys.argv[1:] if argv is None else argv, config=tuned_config())


if __name__ == "__main__":
    main()
