"""Finding and stopping the processes a local cluster started, using /proc only (stdlib), so that
`make cluster-down` works even without the virtualenv.

A process is ours when it was recorded with its start time, or when its environment carries
MARKER_ENV set to the cluster directory: every process the cluster starts, and every pod process the
node agent starts, inherits that variable, so grandchildren that left their process group are found too.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable

MARKER_ENV = "NBKUBE_TESTENV_DIR"


def start_time(pid: int, reap: bool = True) -> int | None:
    """The process start time in clock ticks since boot, or None when it does not exist or is a zombie.

    A zombie is reaped unless `reap` is false: pass false for a child a Popen object still owns, or
    the reap steals its exit status (Popen then reports 0 for a process that exited 3).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        if reap:
            _reap(pid)
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_same(pid: int, started: int | None) -> bool:
    """True when pid is alive and (if known) still the process that was recorded."""
    now = start_time(pid)
    return now is not None and (started is None or now == started)


def marked_processes(cluster_dir: str) -> list[int]:
    """Live processes whose environment names cluster_dir as their cluster."""
    needle = f"{MARKER_ENV}={cluster_dir}".encode()
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if needle in env and start_time(int(entry)) is not None:
            found.append(int(entry))
    return found


def bound_loopback_addresses() -> set[str]:
    """Every 127/8 IPv4 address a local TCP socket listens or is connected on, or a UDP socket is bound
    to (the kernel's tables omit TCP sockets that are only bound)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/udp"):
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            hex_ip = line.split()[1].split(":")[0]
            ip = socket.inet_ntoa(bytes.fromhex(hex_ip)[::-1])
            if ip.startswith("127."):
                found.add(ip)
    return found


def _signal(pid: int, sig: int, group: bool) -> None:
    try:
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(procs: Iterable[tuple[int, int | None]], grace: float, group: bool = True) -> list[int]:
    """SIGTERM each (pid, start_time) still alive (its whole process group when it leads one), wait up to
    grace seconds, then SIGKILL what is left. Returns the pids that were signalled."""
    live = [(pid, st) for pid, st in procs if is_same(pid, st)]
    for pid, _ in live:
        _signal(pid, signal.SIGTERM, group)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(is_same(p, s) for p, s in live):
        time.sleep(0.1)
    for pid, st in live:
        if is_same(pid, st):
            _signal(pid, signal.SIGKILL, group)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(is_same(p, s) for p, s in live):
        time.sleep(0.05)
    return [pid for pid, _ in live]


def git_children() -> int:
    """Running git processes whose parent is this process (tests and benches count what they start)."""
    me, count = str(os.getpid()), 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        count += name.startswith("git") and rest[1] == me
    return count


def open_fds() -> int:
    """File descriptors this process holds open."""
    return len(os.listdir("/proc/self/fd"))
