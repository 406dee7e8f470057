"""A kernel cannot read its gateway's token: not from its own environment, not from the gateway's.

A real `python -m nbkube.gateway` and a real kernel. The gateway runs with a group of its own (65534),
so whether Linux has put it behind the non-dumpable wall is visible to the test even as root: a
non-dumpable process's /proc files belong to root:root, which is what keeps a same-uid kernel out of
`/proc/<gateway>/environ`; a dumpable one's carry the process's own group.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from engine_helpers import notebook, stream_text
from nbkube.engine import GatewayClient, NotebookExecutor
from nbkube.gateway.local import LocalGateway

NOBODY_GROUP = 65534


def _launch(tmp_path: Path, module: str) -> LocalGateway:
    token = secrets.token_hex(16)
    gateway = LocalGateway(token, log_path=tmp_path / f"{module}.log")
    argv = [sys.executable, "-m", module, f"--ip={gateway.host}", f"--port={gateway.port}"]
    if module == "kernel_gateway":
        argv += ["--JupyterWebsocketPersonality.list_kernels=True"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    with open(gateway.log_path, "ab") as log:
        gateway.process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, "KG_AUTH_TOKEN": token},
            start_new_session=True,
            group=NOBODY_GROUP,
            extra_groups=[],
        )
    gateway.wait_ready(60)
    return gateway


PROBE = """
import os
parent = os.getppid()
print("token in env:", any(os.environ.get(k) == TOKEN for k in os.environ))
print("environ group:", os.stat(f"/proc/{parent}/environ").st_gid)
"""


@pytest.mark.gateway
@pytest.mark.skipif(os.geteuid() != 0, reason="starts the gateway with another group")
@pytest.mark.parametrize("module,sealed", [("nbkube.gateway", True), ("kernel_gateway", False)])
async def test_the_gateway_seals_its_token_away_from_its_kernels(
    tmp_path: Path, module: str, sealed: bool
) -> None:
    gateway = _launch(tmp_path, module)
    try:
        async with GatewayClient(gateway.url, gateway.token, request_timeout=30) as client:
            kernel = await client.start_kernel("python3")
            connection = await client.connect(kernel["id"])
            try:
                nb = notebook(f"TOKEN = {gateway.token!r}", PROBE)
                result = await NotebookExecutor(connection).execute_notebook(nb)
            finally:
                await connection.close()
                await client.delete_kernel(kernel["id"])
        printed = stream_text(result.notebook.cells[1])
        assert "token in env: False" in printed
        # Sealed: root:root, closed to the kernel's uid; the stock gateway: its own group, open to it.
        assert f"environ group: {0 if sealed else NOBODY_GROUP}" in printed, printed
    finally:
        gateway.stop()
