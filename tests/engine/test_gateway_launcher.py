"""`python -m nbkube.gateway`: the tuned configuration, as a process and as a config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from nbkube.gateway import TIME_TO_DEAD_SECONDS, tuned_config
from nbkube.gateway.local import LocalGateway
from traitlets.config import Config

pytestmark = [pytest.mark.timeout(120)]

CONFIG_FILE = Path(__file__).parents[2] / "operator" / "nbkube" / "gateway" / "kernel_gateway_config.py"


def get(url: str, token: str | None) -> tuple[int, object]:
    headers = {"Authorization": f"token {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, None


def test_tuned_config_contents() -> None:
    c = tuned_config({"POD_IP": "10.1.2.3"})
    assert (
        c.KernelGatewayApp.kernel_websocket_connection_class
        == "nbkube.gateway.connection.NoDelayWebsocketConnection"
    )
    assert c.KernelGatewayApp.kernel_manager_class == "nbkube.gateway.kernels.TunedMappingKernelManager"
    assert c.KernelGatewayApp.ip == "10.1.2.3"
    assert c.KernelGatewayApp.port_retries == 0
    assert c.JupyterWebsocketPersonality.list_kernels is True
    assert c.KernelRestarter.time_to_dead == TIME_TO_DEAD_SECONDS <= 0.5
    assert c.KernelRestarter.random_ports_until_alive is False
    assert c.ZMQChannelsWebsocketConnection.limit_rate is False
    assert "ip" not in tuned_config({"KG_IP": "0.0.0.0", "POD_IP": "10.1.2.3"}).KernelGatewayApp


def test_connection_class_defaults_to_nodelay_and_no_rate_limit() -> None:
    from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection
    from nbkube.gateway.connection import NoDelayWebsocketConnection

    assert issubclass(NoDelayWebsocketConnection, ZMQChannelsWebsocketConnection)
    traits = NoDelayWebsocketConnection.class_traits()
    assert traits["nodelay"].default() is True
    # the dynamic default is what a connection without config gets
    assert NoDelayWebsocketConnection._limit_rate_default(None) is False  # type: ignore[arg-type]


def test_config_file_is_loadable_by_traitlets() -> None:
    from traitlets.config.loader import PyFileConfigLoader

    loaded: Config = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()
    assert loaded.KernelRestarter.time_to_dead == TIME_TO_DEAD_SECONDS
    assert loaded.JupyterWebsocketPersonality.list_kernels is True


def test_the_gateway_module_imports_no_operator_dependencies() -> None:
    code = (
        "import sys, nbkube.gateway, nbkube.gateway.__main__, nbkube.gateway.connection\n"
        "import nbkube.gateway.kernels, nbkube.gateway.iostream\n"
        "import nbkube.gateway.local\n"
        "operator_side = ('kopf', 'kubernetes', 'kubernetes_asyncio', 'aiohttp', 'pydantic',"
        " 'nbkube.engine')\n"
        "bad = [m for m in operator_side if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.gateway
def test_launcher_binds_pod_ip_requires_the_token_and_lists_kernels(tmp_path: Path) -> None:
    # A pod has POD_IP in its env and no --ip; any 127.x address works on Linux loopback.
    pod_ip = "127.0.0.7"
    gateway = LocalGateway("pod-token", host=pod_ip, env={"POD_IP": pod_ip}, log_path=tmp_path / "gw.log")
    gateway.command = lambda: [sys.executable, "-m", "nbkube.gateway", f"--port={gateway.port}"]  # type: ignore[method-assign]
    with gateway:
        assert get(f"{gateway.url}/api/kernels", "pod-token") == (200, [])  # listing is on
        assert get(f"{gateway.url}/api/kernels", None)[0] == 401
        assert get(f"{gateway.url}/api/kernels", "wrong")[0] == 401


@pytest.mark.gateway
def test_launcher_refuses_a_taken_port_instead_of_moving(gateway: LocalGateway) -> None:
    env = {**os.environ, "KG_AUTH_TOKEN": "x"}
    cmd = [sys.executable, "-m", "nbkube.gateway", "--ip=127.0.0.1", f"--port={gateway.port}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode != 0
