"""Fixtures: real `python -m nbkube.gateway` processes on loopback, clients and kernels on them."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
from engine_helpers import fresh_kernel
from nbkube.engine import GatewayClient, KernelConnection
from nbkube.gateway.local import LocalGateway


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGateway]:
    """One tuned gateway for the session (tests that kill a gateway start their own)."""
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with LocalGateway(secrets.token_hex(16), log_path=log) as gw:
        yield gw


@pytest.fixture
async def client(gateway: LocalGateway) -> AsyncIterator[GatewayClient]:
    async with GatewayClient(gateway.url, gateway.token, request_timeout=30, reconnect_timeout=5) as c:
        yield c


@pytest.fixture
async def kernel(client: GatewayClient) -> AsyncIterator[KernelConnection]:
    """A fresh kernel and an open connection to it; deleted afterwards."""
    async with fresh_kernel(client) as connection:
        yield connection
