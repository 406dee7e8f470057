"""Which gateway pods serve each environment, and the kernels the operator holds on them.

The operator, not a Service, picks the pod for each kernel: a kernel lives in one gateway process,
so its websocket must always reach that pod. Pods are learned from watch events (read by
environment/pods.py); each ready pod gets a client and a warm pool of started kernels so a run's first
cell starts at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nbkube.engine import EngineError, GatewayClient, KernelConnection, KernelPool
from nbkube.engine import setup as kernel_setup

log = logging.getLogger(__name__)

# How long close() waits for kernels being released in the background (the gateway culls the rest).
RELEASE_WAIT_SECONDS = 10.0

# (namespace, environment) -> that environment's gateway token, None when it is gone. The operator
# computes tokens (environment/tokens.py); it never reads them from Secrets.
TokenSource = Callable[[str, str], Awaitable[str | None]]


@dataclass
class GatewayPod:
    namespace: str
    environment: str
    name: str
    address: str
    ready: bool
    terminating: bool
    spec_hash: str | None
    # Why its packages install failed (the pod never gets Ready), None when it has not.
    install_failure: str | None = None

    @property
    def usable(self) -> bool:
        return self.ready and not self.terminating and bool(self.address)


@dataclass
class PodKernels:
    pod: GatewayPod
    client: GatewayClient
    pool: KernelPool | None
    in_use: set[str] = field(default_factory=set)


@dataclass
class KernelLease:
    """A kernel held by one run, with its open connection (whose session id makes it resumable)."""

    namespace: str
    environment: str
    pod: str
    address: str
    connection: KernelConnection
    client: GatewayClient
    pool: KernelPool | None = None
    before_shutdown: Callable[[KernelConnection], Awaitable[object]] | None = None
    """Run on the kernel when it is released, before it is shut down (e.g. removing a run's files)."""

    @property
    def kernel_id(self) -> str:
        return self.connection.kernel_id

    @property
    def session_id(self) -> str:
        return self.connection.session_id


@dataclass
class EnvironmentSettings:
    kernel_name: str = "python3"
    warm_kernels: int = 0
    max_kernels_per_pod: int = 8


class NoGatewayAvailable(Exception):
    pass


class GatewaysAtCapacity(NoGatewayAvailable):
    """Every gateway pod of the environment holds maxKernelsPerPod kernels: wait for one to be released."""


class KernelRegistry:
    def __init__(self, token_for: TokenSource, port: int = 8888, request_timeout: float = 30.0) -> None:
        self._token_for = token_for
        self._port = port
        self._timeout = request_timeout
        self._pods: dict[tuple[str, str], dict[str, PodKernels]] = {}
        self._settings: dict[tuple[str, str], EnvironmentSettings] = {}
        self._changed = asyncio.Condition()
        # Guards changes of _pods, and only those: it is never held across I/O (a token's API read,
        # closing a pool or a client), so one slow pod stalls no other pod's events.
        self._lock = asyncio.Lock()
        # The latest event seen of each pod, by (namespace, environment, pod): an event whose token read
        # finishes after a later event of its pod (or after close()) changes nothing.
        self._latest: dict[tuple[str, str, str], object] = {}
        self._closed = False
        self._releasing: set[asyncio.Task[None]] = set()
        # Pods whose packages install failed, by environment: written and read without an await in
        # between, so they need no lock.
        self._install_failed: dict[tuple[str, str], dict[str, GatewayPod]] = {}

    async def configure(self, namespace: str, environment: str, settings: EnvironmentSettings) -> None:
        """Records an environment's kernel settings; pods already known get (or lose) their warm pool."""
        key = (namespace, environment)
        previous = self._settings.get(key)
        self._settings[key] = settings
        if previous == settings:
            return
        swapped: list[tuple[KernelPool | None, KernelPool | None]] = []
        async with self._lock:
            for kernels in self._pods.get(key, {}).values():
                old, kernels.pool = kernels.pool, self._pool(kernels.client, settings)
                swapped.append((old, kernels.pool))
        for old, new in swapped:
            if new is not None:
                await new.start()
            if old is not None:
                await old.close()

    def forget_environment(self, namespace: str, environment: str) -> None:
        self._settings.pop((namespace, environment), None)
        self._install_failed.pop((namespace, environment), None)

    def install_failures(self, namespace: str, environment: str, spec_hash: str) -> list[GatewayPod]:
        """The environment's pods of this spec whose packages install failed, by name."""
        pods = self._install_failed.get((namespace, environment), {}).values()
        return sorted((p for p in pods if p.spec_hash == spec_hash), key=lambda p: p.name)

    def _note_install(self, event_type: str, pod: GatewayPod) -> None:
        key = (pod.namespace, pod.environment)
        failed = self._install_failed.setdefault(key, {})
        if event_type == "DELETED" or pod.terminating or pod.install_failure is None:
            failed.pop(pod.name, None)
        else:
            failed[pod.name] = pod
        if not failed:
            del self._install_failed[key]

    async def observe(self, event_type: str, pod: GatewayPod) -> None:
        """Feeds a pod watch event in (environment/pods.py reads the pod). A new pod's token is read
        before the lock is taken, and the map changed under it only if no later event of that pod
        came meanwhile; pools and clients that go are closed after it is released."""
        self._note_install(event_type, pod)
        key = (pod.namespace, pod.environment)
        ident = (*key, pod.name)
        ticket = self._latest[ident] = object()
        gone = event_type == "DELETED" or not pod.usable
        known = self._pods.get(key, {}).get(pod.name)
        client = None
        if not gone and (known is None or known.pod.address != pod.address):
            client = await self._client(pod)
        stale: list[PodKernels] = []
        start: KernelPool | None = None
        async with self._lock:
            current = self._pods.get(key, {}).get(pod.name)
            if self._closed or self._latest.get(ident) is not ticket:
                pass  # close() or a later event of this pod decided meanwhile
            elif gone:
                if current is not None:
                    stale.append(self._pods[key].pop(pod.name))
                if event_type == "DELETED":
                    del self._latest[ident]
            elif client is not None:
                if current is not None:
                    stale.append(current)
                settings = self._settings.get(key, EnvironmentSettings())
                kernels = PodKernels(pod=pod, client=client, pool=self._pool(client, settings))
                self._pods.setdefault(key, {})[pod.name] = kernels
                start, client = kernels.pool, None
            elif current is not None:
                current.pod = pod
        if client is not None:  # not kept
            await client.close()
        for kernels in stale:
            await self._close(kernels)
        if start is not None:
            await start.start()
        async with self._changed:
            self._changed.notify_all()

    async def _client(self, pod: GatewayPod) -> GatewayClient:
        token = await self._token_for(pod.namespace, pod.environment) or ""
        return GatewayClient(f"http://{pod.address}:{self._port}", token, request_timeout=self._timeout)

    @staticmethod
    def _pool(client: GatewayClient, settings: EnvironmentSettings) -> KernelPool | None:
        """A warm pool, not yet started, when the environment keeps warm kernels."""
        if settings.warm_kernels <= 0:
            return None
        # Pooled kernels get the run setup's kernel-side module now, not on a run's critical path.
        return KernelPool(client, settings.kernel_name, settings.warm_kernels, prime=kernel_setup.prepare)

    async def _close(self, kernels: PodKernels) -> None:
        try:
            if kernels.pool is not None:
                await kernels.pool.close()
        except Exception as exc:  # the pod may already be gone; its kernels went with it
            log.debug("closing pool of %s: %s", kernels.pod.name, exc)
        await kernels.client.close()

    def usage(self, namespace: str, environment: str) -> tuple[int, int]:
        """(kernels in use by runs, warm kernels ready) for an environment."""
        pods = self._pods.get((namespace, environment), {})
        in_use = sum(len(p.in_use) for p in pods.values())
        warm = sum(p.pool.ready_count if p.pool is not None else 0 for p in pods.values())
        return in_use, warm

    def clients(self) -> list[tuple[str, GatewayClient]]:
        """(pod name, client) of every known gateway pod."""
        return [(k.pod.name, k.client) for pods in self._pods.values() for k in pods.values()]

    def kernels_in_use(self) -> set[str]:
        return {kernel_id for pods in self._pods.values() for k in pods.values() for kernel_id in k.in_use}

    def has_ready_pod(self, namespace: str, environment: str) -> bool:
        return bool(self._pods.get((namespace, environment)))

    async def wait_for_pod(self, namespace: str, environment: str, timeout: float) -> bool:
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.has_ready_pod(namespace, environment)), timeout
                )
            except TimeoutError:
                return False
        return True

    async def acquire(self, namespace: str, environment: str) -> KernelLease:
        """A kernel for one run: a warm one when there is one, else a freshly started one."""
        pods = list(self._pods.get((namespace, environment), {}).values())
        if not pods:
            raise NoGatewayAvailable(f"no ready gateway pod for environment {namespace}/{environment}")
        settings = self._settings.get((namespace, environment), EnvironmentSettings())
        pods.sort(key=lambda p: (-(p.pool.ready_count if p.pool else 0), len(p.in_use)))
        chosen = pods[0]
        if len(chosen.in_use) >= settings.max_kernels_per_pod:
            raise GatewaysAtCapacity(f"every gateway pod of {namespace}/{environment} is at maxKernelsPerPod")
        connection = None
        if chosen.pool is not None:
            with contextlib.suppress(EngineError):  # a pool being replaced; start a kernel instead
                connection = await chosen.pool.acquire()
        if connection is None:
            model = await chosen.client.start_kernel(settings.kernel_name)
            try:
                connection = await chosen.client.connect(model["id"])
            except BaseException:
                await chosen.client.delete_kernel(model["id"])
                raise
        chosen.in_use.add(connection.kernel_id)
        return KernelLease(
            namespace,
            environment,
            chosen.pod.name,
            chosen.pod.address,
            connection,
            chosen.client,
            chosen.pool,
        )

    async def adopt(
        self,
        namespace: str,
        environment: str,
        pod: str,
        kernel_id: str,
        session_id: str,
        msg_ids: tuple[str, ...],
        delivered: tuple[str, ...] = (),
    ) -> KernelLease | None:
        """Reattaches to a kernel a run held before the operator restarted: same kernel, same session,
        so the gateway replays what the kernel said while nobody listened."""
        kernels = self._pods.get((namespace, environment), {}).get(pod)
        if kernels is None:
            return None
        await kernels.client.get_kernel(kernel_id)
        connection = await kernels.client.connect(
            kernel_id, session_id, resume_msg_ids=msg_ids, delivered_msg_ids=delivered
        )
        kernels.in_use.add(kernel_id)
        return KernelLease(namespace, environment, pod, kernels.pod.address, connection, kernels.client)

    def release(self, lease: KernelLease) -> None:
        """A used kernel is never handed to another run: it is shut down, in the background (a run's
        outcome need not wait for the kernel process to exit, a few hundred milliseconds); close()
        waits for these."""
        self._forget(lease)
        task = asyncio.create_task(self._shut_down(lease), name=f"release-kernel-{lease.kernel_id}")
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    def _forget(self, lease: KernelLease) -> None:
        kernels = self._pods.get((lease.namespace, lease.environment), {}).get(lease.pod)
        if kernels is not None:
            kernels.in_use.discard(lease.kernel_id)

    async def _shut_down(self, lease: KernelLease) -> None:
        if lease.before_shutdown is not None:
            try:
                await lease.before_shutdown(lease.connection)
            except Exception as exc:
                log.info(
                    "kernel %s on %s: cleaning up before shutdown failed: %s", lease.kernel_id, lease.pod, exc
                )
        try:
            await lease.connection.close()
            await lease.client.delete_kernel(lease.kernel_id)
        except Exception as exc:
            log.info("kernel %s on %s was already gone: %s", lease.kernel_id, lease.pod, exc)

    async def close(self) -> None:
        if self._releasing:
            await asyncio.wait(set(self._releasing), timeout=RELEASE_WAIT_SECONDS)
        async with self._lock:
            self._closed = True
            closing = [kernels for pods in self._pods.values() for kernels in pods.values()]
            self._pods.clear()
        for kernels in closing:
            await self._close(kernels)


__all__ = [
    "EnvironmentSettings",
    "GatewayPod",
    "KernelLease",
    "KernelRegistry",
    "NoGatewayAvailable",
    "TokenSource",
]
