"""The kernel registry holds its lock only while its map of pods changes: a gateway pod's token is
read (an API GET of its environment) outside it, so one slow read stalls no other pod's events, and
what the read finds is checked again under the lock before it is kept."""

from __future__ import annotations

import asyncio
from typing import Any

from nbkube.environment.tokens import GatewayTokens
from nbkube.kernels import GatewayPod, KernelRegistry

# Only a guard against a hang: every wait below ends on an event, never on this clock.
HANG_GUARD_SECONDS = 30


class SlowKube:
    """Answers the GET of every environment at once, but the one named `slow` only once released."""

    def __init__(self, slow: str) -> None:
        self.slow = slow
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get_or_none(self, path: str) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        if name == self.slow:
            self.reading.set()
            await self.release.wait()
        return {"metadata": {"name": name, "uid": f"uid-{name}"}}


def _pod(environment: str, address: str = "10.0.0.1") -> GatewayPod:
    return GatewayPod(
        namespace="team",
        environment=environment,
        name=f"{environment}-gateway-0",
        address=address,
        ready=True,
        terminating=False,
        spec_hash="h1",
    )


def _registry(kube: SlowKube) -> tuple[KernelRegistry, GatewayTokens]:
    tokens = GatewayTokens(b"k" * 32, kube)  # type: ignore[arg-type]
    return KernelRegistry(tokens.token_for), tokens


async def test_a_slow_token_read_for_one_pod_does_not_block_observing_another():
    kube = SlowKube("slow")
    registry, tokens = _registry(kube)
    slow = asyncio.create_task(registry.observe("ADDED", _pod("slow")))
    await kube.reading.wait()  # the slow pod's token read is under way, and stays so

    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await registry.observe("ADDED", _pod("fast", "10.0.0.2"))
    assert registry.has_ready_pod("team", "fast") and not slow.done()
    assert not registry.has_ready_pod("team", "slow")
    assert dict(registry.clients())["fast-gateway-0"].token == tokens.token("team", "fast", "uid-fast")

    kube.release.set()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await slow
    assert registry.has_ready_pod("team", "slow")
    assert dict(registry.clients())["slow-gateway-0"].token == tokens.token("team", "slow", "uid-slow")
    await registry.close()


async def test_a_pod_deleted_while_its_token_is_read_is_not_kept():
    kube = SlowKube("slow")
    registry, _ = _registry(kube)
    added = asyncio.create_task(registry.observe("ADDED", _pod("slow")))
    await kube.reading.wait()

    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await registry.observe("DELETED", _pod("slow"))
    kube.release.set()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await added
    assert not registry.has_ready_pod("team", "slow")
    assert registry.clients() == []
    await registry.close()


async def test_a_pod_whose_token_read_ends_after_the_registry_closed_is_not_kept():
    kube = SlowKube("slow")
    registry, _ = _registry(kube)
    added = asyncio.create_task(registry.observe("ADDED", _pod("slow")))
    await kube.reading.wait()

    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await registry.close()
    kube.release.set()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        await added
    assert registry.clients() == []
