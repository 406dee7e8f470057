"""`python -m nbkube.gateway [--ip IP] [--port PORT] [--KernelGatewayApp.option=value ...]`.

Starts Jupyter Kernel Gateway with nbkube's tuned configuration (nbkube.gateway.config.tuned_config).
Every argument is passed to KernelGatewayApp, so command-line options override the tuning. The auth
token comes from the KG_AUTH_TOKEN environment variable (never from the command line, which `ps` shows).

Kernels are user code running under the gateway's uid, so before anything starts the gateway seals the
token away from them (nbkube.gateway.seal): it leaves the environment kernels could inherit, and the
process becomes non-dumpable, so `/proc/<gateway pid>/environ` and `/proc/<gateway pid>/mem` are closed
to processes of the same uid (root with CAP_SYS_PTRACE excepted: gateway pods drop every capability).
"""

from __future__ import annotations

import sys

from kernel_gateway.gatewayapp import KernelGatewayApp

from nbkube.gateway.config import tuned_config
from nbkube.gateway.seal import seal_token


def main(argv: list[str] | None = None) -> None:
    config = tuned_config()
    token = seal_token()
    if token:
        config.KernelGatewayApp.auth_token = token
    KernelGatewayApp.launch_instance(argv=sys.argv[1:] if argv is None else argv, config=config)


if __name__ == "__main__":
    main()
