"""The host side of NetworkPolicy enforcement (stdlib only, so that `cluster down` can clean up without
the virtualenv): a cgroup (v2) per pod, every process of the pod in it, and iptables / ip6tables chains
jumped to from OUTPUT for that cgroup (`-m cgroup --path`); the local listening sockets and which pod
owns each (/proc). Everything is named per cluster (cluster_id), so clusters on one machine never touch
each other's: cgroups under <cgroup2>/nbkube/<cluster-id>/<pod-uid>, chains NBK-<cluster-id>-<pod>."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from nbkube_testenv.nodeagent.netpol import Chains, Listener

FAMILIES = (4, 6)
_TOOLS = {4: "iptables", 6: "ip6tables"}


class FirewallError(Exception):
    pass


def cluster_id(directory: str | os.PathLike[str]) -> str:
    """A short id of the cluster in this directory: its cgroups' and chains' names carry it."""
    return hashlib.sha256(os.path.realpath(directory).encode()).hexdigest()[:8]


def chain_prefix(cid: str) -> str:
    return f"NBK-{cid}-"


def chain_name(cid: str, pod_uid: str) -> str:
    """NBK-<cluster id>-<10 hex of the pod uid>: 23 characters, room for the -L / -X<n> sub-chains
    within iptables' 28."""
    return chain_prefix(cid) + pod_uid.replace("-", "")[:10]


# -- cgroups -------------------------------------------------------------------------------------------
def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (its root), or None."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, fstype = left.split(), right.split()[:1]
        if fstype == ["cgroup2"] and fields[3] == "/":
            return Path(fields[4])
    return None


class Cgroups:
    """One cgroup per pod under <root>/nbkube/<cluster id>; iptables names them relative to root."""

    def __init__(self, root: Path, cid: str) -> None:
        self.root = root
        self.base = root / "nbkube" / cid

    def path(self, uid: str) -> Path:
        return self.base / uid

    def relative(self, uid: str) -> str:
        return str(self.path(uid).relative_to(self.root))

    def create(self, uid: str) -> None:
        self.path(uid).mkdir(parents=True, exist_ok=True)

    def join_argv(self, uid: str, argv: list[str]) -> list[str]:
        """argv, run by a shell that first moves itself into the pod's cgroup (so every socket the
        pod's processes open carries it, and every child inherits it), then execs argv in its place."""
        procs = str(self.path(uid) / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$1" && shift && exec "$@"', "sh", procs, *argv]

    def pids(self, uid: str) -> list[int]:
        out = []
        for directory, _, _ in os.walk(self.path(uid)):
            try:
                out += [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
        return out

    def pods(self) -> list[str]:
        try:
            return [p.name for p in self.base.iterdir() if p.is_dir()]
        except OSError:
            return []

    def remove(self, uid: str, timeout: float = 5) -> bool:
        """Kills whatever is left in the pod's cgroup (a process that left the pod's process group) and
        removes it; False when it could not be removed."""
        path = self.path(uid)
        if not path.exists():
            return True
        deadline = time.monotonic() + timeout
        while True:
            for pid in self.pids(uid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                for directory, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
                    os.rmdir(directory)
                return True
            except FileNotFoundError:
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)

    def remove_all(self) -> list[str]:
        """Every pod cgroup of this cluster removed; returns the ones that could not be."""
        left = [uid for uid in self.pods() if not self.remove(uid)]
        for p in (self.base, self.base.parent):
            try:
                p.rmdir()
            except OSError:
                pass
        return left


# -- sockets ---------------------------------------------------------------------------------------------
def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    address = ipaddress.IPv6Address(words)
    return f"::ffff:{address.ipv4_mapped}" if address.ipv4_mapped else str(address)


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """The inodes of the sockets these processes hold."""
    found = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                found.add(int(target[8:-1]))
    return found


def listeners(owners: Mapping[int, str]) -> dict[int, list[Listener]]:
    """Every local TCP listening socket and unconnected UDP socket per address family it answers in
    (an IPv4-mapped address in IPv4; [::] in both, taken for dual-stack), its owner looked up by inode."""
    out: dict[int, list[Listener]] = {4: [], 6: []}
    for table, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            local, remote, state, inode = f[1], f[2], f[3], int(f[9])
            if proto == "tcp" and state != "0A":
                continue
            if proto == "udp" and (state != "07" or int(remote.split(":")[1], 16) != 0):
                continue
            hex_addr, hex_port = local.split(":")
            address, port = _address(hex_addr), int(hex_port, 16)
            owner = owners.get(inode, "")
            if address.startswith("::ffff:") and "." in address:
                out[4].append(Listener(proto, address.removeprefix("::ffff:"), port, owner))
            elif address == "::":
                out[4].append(Listener(proto, "0.0.0.0", port, owner))
                out[6].append(Listener(proto, "::", port, owner))
            else:
                out[4 if "." in address else 6].append(Listener(proto, address, port, owner))
    return out


# -- iptables --------------------------------------------------------------------------------------------
def _restore(family: int, lines: list[str]) -> None:
    script = "*filter\n" + "".join(line + "\n" for line in lines) + "COMMIT\n"
    done = subprocess.run(
        [f"{_TOOLS[family]}-restore", "--noflush"], input=script.encode(), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise FirewallError(f"{_TOOLS[family]}-restore: {done.stderr.decode(errors='replace').strip()}")


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./:,!" for c in arg) else f'"{arg}"'


def install(family: int, base: str, cgroup: str, new: Chains, old: Chains | None) -> None:
    """Writes a pod's chains in one transaction: each chain declared (which empties it) and filled,
    the OUTPUT jump for its cgroup added the first time, chains it no longer has removed."""
    lines = [f":{name} - [0:0]" for name in new.chains]
    for name, rules in new.chains.items():
        lines += [" ".join([f"-A {name}", *map(_quote, rule)]) for rule in rules]
    if old is None:
        lines.append(f"-I OUTPUT 1 -m cgroup --path {_quote(cgroup)} -j {base}")
    for name in old.chains if old else ():
        if name not in new.chains:
            lines += [f"-F {name}", f"-X {name}"]
    _restore(family, lines)


def remove(family: int, match: str, exact: bool = True) -> int:
    """Removes the OUTPUT jumps to, and the chains named, `match` and `match-...` (exact), or every
    chain starting with `match` (a cluster's prefix); returns how many chains went."""
    tool = shutil.which(f"{_TOOLS[family]}-save")
    if tool is None:
        return 0
    saved = subprocess.run([tool, "-t", "filter"], capture_output=True, check=False).stdout.decode()

    def ours(name: str) -> bool:
        return (name == match or name.startswith(match + "-")) if exact else name.startswith(match)

    chains = [
        line[1:].split()[0]
        for line in saved.splitlines()
        if line.startswith(":") and ours(line[1:].split()[0])
    ]
    jumps = []
    for line in saved.splitlines():
        words = line.split()
        if line.startswith("-A ") and "-j" in words and ours(words[words.index("-j") + 1]):
            if words[1] not in chains:  # rules of our own chains go with them
                jumps.append("-D " + line[3:])
    if not chains and not jumps:
        return 0
    _restore(family, jumps + [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains])
    return len(chains)


def tools_missing() -> list[str]:
    return [
        t
        for family in FAMILIES
        for t in (f"{_TOOLS[family]}-restore", f"{_TOOLS[family]}-save")
        if shutil.which(t) is None
    ]


def cleanup(directory: str | os.PathLike[str]) -> int:
    """Every chain and cgroup of the cluster in this directory removed (`cluster down`, the agent's
    start and stop); returns how many chains went. Quiet where iptables or cgroup v2 is missing."""
    cid = cluster_id(directory)
    removed = 0
    if not tools_missing() and os.geteuid() == 0:
        for family in FAMILIES:
            try:
                removed += remove(family, chain_prefix(cid), exact=False)
            except FirewallError:
                pass
    root = cgroup2_root()
    if root is not None:
        Cgroups(root, cid).remove_all()
    return removed
