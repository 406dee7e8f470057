"""Pod addresses never collide with an address a local socket already holds (another cluster's pod)."""

from __future__ import annotations

import socket

from nbkube_testenv.cluster import pick_pod_octet
from nbkube_testenv.nodeagent.addresses import IpAllocator


def test_allocator_skips_addresses_bound_by_other_processes_and_reuses_released_ones() -> None:
    octet = pick_pod_octet()
    with socket.socket() as other_cluster_pod:
        other_cluster_pod.bind((f"127.{octet}.0.1", 0))
        other_cluster_pod.listen()
        ips = IpAllocator(octet)
        first, second = ips.allocate(), ips.allocate()
        assert (first, second) == (f"127.{octet}.0.2", f"127.{octet}.0.3")
        assert ips.allocate(preferred=f"127.{octet}.0.1") == f"127.{octet}.0.4"
        ips.release(first)
        assert ips.allocate(preferred=first) == first


def test_each_cluster_picks_a_pod_octet_no_local_socket_uses() -> None:
    octet = pick_pod_octet()
    with socket.socket() as holder:
        holder.bind((f"127.{octet}.9.9", 0))
        holder.listen()
        assert all(pick_pod_octet() != octet for _ in range(50))
