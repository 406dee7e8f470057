"""Pod addresses: 127.<octet>.x.y, one per live pod of this agent."""

from __future__ import annotations

import threading

from nbkube_testenv import procs

# An address of the machine that is no pod's (pods get 127.N.x.y with N >= 1) and not the node's
# 127.0.0.1: a server a test runs for its pods to reach binds here, so that NetworkPolicies see it as a
# host outside the cluster (the gateway policy allows those) and not as the node (which it denies).
OUTSIDE_IP = "127.0.0.2"


class IpAllocator:
    """Pod addresses 127.<octet>.x.y, unique among this agent's live pods and skipping any address a
    local socket is bound to (another cluster's pod, say)."""

    def __init__(self, octet: int) -> None:
        self.prefix = f"127.{octet}."
        self._used: set[str] = set()
        self._next = 1
        self._lock = threading.Lock()

    def allocate(self, preferred: str | None = None) -> str:
        with self._lock:
            busy = procs.bound_loopback_addresses()
            if preferred and preferred.startswith(self.prefix) and preferred not in self._used | busy:
                self._used.add(preferred)
                return preferred
            for _ in range(254 * 255):
                n = self._next
                self._next = self._next % (254 * 255) + 1
                ip = f"{self.prefix}{(n - 1) // 254}.{(n - 1) % 254 + 1}"
                if ip not in self._used and ip not in busy:
                    self._used.add(ip)
                    return ip
            raise RuntimeError(f"no free pod address left in {self.prefix}0.0/16")

    def release(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)
