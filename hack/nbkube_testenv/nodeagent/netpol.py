"""NetworkPolicy egress as iptables rules for one pod of the node agent: pure functions, no I/O
(firewall.py applies what they return, enforcer.py feeds them the cluster's objects).

A pod's rules, one chain per address family jumped to from OUTPUT for the pod's cgroup:

    ESTABLISHED,RELATED          ACCEPT   (replies on connections others opened to the pod)
    -o lo                        -> <chain>-L   (what a local listening socket really is, below)
    -d 127.0.0.1 (::1)           ACCEPT   (the pod's own loopback)
    -d <the pod's IP>            ACCEPT
    one rule per allowed (peer, port) of the union of every selecting policy's egress rules
                                 ACCEPT   (an ipBlock with `except` jumps to <chain>-X<n>, which RETURNs
                                           for the excepted CIDRs and ACCEPTs the rest)
    tcp                          REJECT --reject-with tcp-reset
    anything else                REJECT   (icmp port unreachable)

The loopback subtlety: pods are processes of one host, so 127.0.0.1 is not the pod's own loopback but
the host's, where the control plane, the operator and every pod's kernels (jupyter_client binds
127.0.0.1) listen, and a socket bound to 0.0.0.0 (or [::]) answers at every local address, pod IPs
included. What a connection reaches is the local socket listening there, so the `<chain>-L` rules
decide by that socket's owner (a Listener, found in /proc by firewall.py), most specific address first:

    the pod's own socket              ACCEPT (its own loopback), written only where a rule below would
                                      otherwise catch the same port
    another pod's socket on its IP    RETURN: the policy decides, the destination being that pod
    another pod's socket elsewhere    REJECT: 127.0.0.1 or 0.0.0.0 of another pod is its own loopback
      (127.0.0.1, 0.0.0.0)            in a real cluster, which nobody else reaches (for a wildcard
                                      socket, its pod IP RETURNs first)
    a host socket on 127.0.0.1 or     the node: ACCEPT or REJECT as the policy would decide for the
      0.0.0.0 (::1, ::)               node's address 127.0.0.1 (::1) and that port
    a host socket on another address  RETURN: a host of its own, the policy decides by its address
      (127.0.0.2, say)

A 127.0.0.1 port nobody listened on at the last look is taken for the pod's own (a kernel it just
started): it is accepted until the next look (firewall.py: on every policy, pod or namespace event and
every few seconds) sees another owner.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NODE_ADDRESS = {4: "127.0.0.1", 6: "::1"}
WILDCARD = {"0.0.0.0", "::"}
REJECT_TCP = ["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]


@dataclass(frozen=True)
class PodRef:
    """A pod as policies see it: where it is, its labels and its address ("" before it has one)."""

    namespace: str
    labels: Mapping[str, str]
    ip: str = ""
    uid: str = ""


@dataclass(frozen=True)
class Listener:
    """A local socket that accepts connections (TCP LISTEN) or datagrams (an unconnected UDP socket),
    in the address family it is reached in; owner is the uid of this cluster's pod it belongs to, ""
    for any other process (the control plane, the operator, another cluster's pods)."""

    proto: str  # "tcp" or "udp"
    address: str  # "0.0.0.0" / "::" when bound to every address
    port: int
    owner: str = ""


@dataclass(frozen=True)
class Allow:
    """One (destination, port) a policy allows: cidr None = anywhere, proto None = any protocol, port
    None = any port."""

    cidr: str | None = None
    excepted: tuple[str, ...] = ()
    proto: str | None = None
    port: int | None = None
    end_port: int | None = None


@dataclass
class Chains:
    """A pod's chains for one family: name -> rules (iptables arguments after `-A <name>`), the main
    chain first; warnings say what the policies asked for that is not enforced."""

    chains: dict[str, list[list[str]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# -- selectors -----------------------------------------------------------------------------------------
def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector: every matchLabels entry and matchExpressions requirement holds (an
    empty selector matches everything)."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # an unknown operator matches nothing, as the API server would refuse it
    return True


def has_egress(policy: Mapping[str, Any]) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types is None:  # the API server defaults it; a policy with egress rules is an egress policy
        return "egress" in spec
    return "Egress" in types


def egress_policies(policies: Iterable[Mapping[str, Any]], pod: PodRef) -> list[Mapping[str, Any]]:
    """The policies whose policyTypes include Egress and whose podSelector selects this pod."""
    return [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and has_egress(p)
        and selector_matches((p.get("spec") or {}).get("podSelector"), pod.labels)
    ]


def peer_pods(
    peer: Mapping[str, Any],
    policy_namespace: str,
    pods: Iterable[PodRef],
    namespaces: Mapping[str, Mapping[str, str]],
) -> list[PodRef]:
    """The pods (with an address) a podSelector / namespaceSelector peer stands for."""
    out = []
    for pod in pods:
        if not pod.ip:
            continue
        if "namespaceSelector" in peer:
            ns_labels = namespaces.get(pod.namespace, {"kubernetes.io/metadata.name": pod.namespace})
            if not selector_matches(peer["namespaceSelector"], ns_labels):
                continue
        elif pod.namespace != policy_namespace:
            continue
        if "podSelector" in peer and not selector_matches(peer["podSelector"], pod.labels):
            continue
        out.append(pod)
    return out


# -- allowed destinations --------------------------------------------------------------------------------
def _family(cidr: str) -> int:
    return ipaddress.ip_network(cidr, strict=False).version


def _host(ip: str) -> str:
    return f"{ip}/32" if ipaddress.ip_address(ip).version == 4 else f"{ip}/128"


def allowed(
    policies: Sequence[Mapping[str, Any]],
    pods: Sequence[PodRef],
    namespaces: Mapping[str, Mapping[str, str]],
    family: int,
) -> tuple[list[Allow], list[str]]:
    """The union of these policies' egress rules as (destination, port) pairs of one address family, and
    warnings for what is skipped (named ports)."""
    allows: list[Allow] = []
    warnings: list[str] = []
    for policy in policies:
        ns, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
        for rule in (policy.get("spec") or {}).get("egress") or []:
            ports: list[tuple[str | None, int | None, int | None]] = []
            for p in rule.get("ports") or []:
                if isinstance(p.get("port"), str):
                    warnings.append(f"{ns}/{name}: named port {p['port']!r} is not enforced (skipped)")
                    continue
                proto = (p.get("protocol") or "TCP").lower()
                ports.append((proto, p.get("port"), p.get("endPort") if p.get("port") is not None else None))
            if rule.get("ports") and not ports:
                continue  # every port of the rule was named: it allows nothing here
            destinations: list[tuple[str | None, tuple[str, ...]]] = []
            for peer in rule.get("to") or []:
                if "ipBlock" in peer:
                    block = peer["ipBlock"]
                    if _family(block["cidr"]) == family:
                        excepted = tuple(
                            str(ipaddress.ip_network(e, strict=False)) for e in block.get("except") or []
                        )
                        destinations.append(
                            (str(ipaddress.ip_network(block["cidr"], strict=False)), excepted)
                        )
                else:
                    for pod in peer_pods(peer, ns, pods, namespaces):
                        if ipaddress.ip_address(pod.ip).version == family:
                            destinations.append((_host(pod.ip), ()))
            if not rule.get("to"):
                destinations.append((None, ()))
            for cidr, excepted in destinations:
                for proto, port, end in ports or [(None, None, None)]:
                    allows.append(Allow(cidr, excepted, proto, port, end))
    return list(dict.fromkeys(allows)), list(dict.fromkeys(warnings))


def allows_address(allows: Iterable[Allow], address: str, proto: str, port: int) -> bool:
    """Whether any Allow admits this destination."""
    ip = ipaddress.ip_address(address)
    for a in allows:
        if a.proto is not None and a.proto != proto:
            continue
        if a.port is not None and not (a.port <= port <= (a.end_port or a.port)):
            continue
        if a.cidr is not None:
            net = ipaddress.ip_network(a.cidr)
            if ip.version != net.version or ip not in net:
                continue
            if any(ip in ipaddress.ip_network(e) for e in a.excepted if _family(e) == ip.version):
                continue
        return True
    return False


# -- rules ---------------------------------------------------------------------------------------------
def _reject(proto: str | None) -> list[str]:
    return ["-j", "REJECT", "--reject-with", "tcp-reset"] if proto == "tcp" else ["-j", "REJECT"]


def _port_match(proto: str | None, port: int | None, end: int | None) -> list[str]:
    if proto is None:
        return []
    out = ["-p", proto]
    if port is not None:
        out += ["--dport", f"{port}:{end}" if end and end != port else str(port)]
    return out


def listener_rules(
    me: PodRef, pods: Sequence[PodRef], listeners: Iterable[Listener], allows: Sequence[Allow], family: int
) -> list[list[str]]:
    """The `<chain>-L` rules for this pod: what each local listening socket stands for (module doc)."""
    ip_of = {p.uid: p.ip for p in pods if p.uid}
    node = NODE_ADDRESS[family]
    groups: dict[tuple[str, int], list[Listener]] = {}
    for listener in sorted(set(listeners), key=lambda x: (x.address in WILDCARD, x.address, x.owner)):
        groups.setdefault((listener.proto, listener.port), []).append(listener)
    rules: list[list[str]] = []
    for (proto, port), group in sorted(groups.items()):
        entries: list[tuple[str | None, str, bool]] = []  # (destination or None: any, verdict, needed)
        for lst in group:
            wildcard = lst.address in WILDCARD
            dest = None if wildcard else _host(lst.address)
            if lst.owner == me.uid:
                entries.append((dest, "ACCEPT", False))  # needed only to shadow a broader rule below
            elif lst.owner:
                pod_ip = ip_of.get(lst.owner, "")
                if pod_ip and ipaddress.ip_address(pod_ip).version == family:
                    if wildcard:
                        entries.append((_host(pod_ip), "RETURN", False))
                    elif lst.address == pod_ip:
                        entries.append((dest, "RETURN", False))
                        continue
                entries.append((dest, "REJECT", True))
            elif wildcard or lst.address == node:
                verdict = "ACCEPT" if allows_address(allows, node, proto, port) else "REJECT"
                # the main chain accepts 127.0.0.1 anyway: an ACCEPT matters for a wildcard socket only
                entries.append((dest, verdict, verdict == "REJECT" or wildcard))
            else:
                entries.append((dest, "RETURN", False))
        needed = [i for i, (_, _, n) in enumerate(entries) if n]
        entries = entries[: needed[-1] + 1] if needed else []
        seen: set[str | None] = set()
        for dest, verdict, _ in entries:
            if dest in seen:
                continue  # a broader or earlier rule for the same destination already decided
            seen.add(dest)
            match = (["-d", dest] if dest else []) + ["-p", proto, "--dport", str(port)]
            rules.append(match + (_reject(proto) if verdict == "REJECT" else ["-j", verdict]))
            if dest is None:
                break  # nothing after a rule for every address matters
    return rules


def pod_chains(
    base: str,
    me: PodRef,
    policies: Iterable[Mapping[str, Any]],
    pods: Sequence[PodRef],
    namespaces: Mapping[str, Mapping[str, str]],
    listeners: Iterable[Listener],
    family: int,
) -> Chains | None:
    """This pod's chains for one address family (named base, base-L, base-X<n>), or None when no
    policy with policyTypes Egress selects it (its egress is not restricted)."""
    selecting = egress_policies(policies, me)
    if not selecting:
        return None
    allows, warnings = allowed(selecting, pods, namespaces, family)
    out = Chains(warnings=warnings)
    main: list[list[str]] = [["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]]
    out.chains[base] = main
    local = listener_rules(me, pods, listeners, allows, family)
    if local:
        out.chains[f"{base}-L"] = local
        main.append(["-o", "lo", "-j", f"{base}-L"])
    main.append(["-d", _host(NODE_ADDRESS[family]), "-j", "ACCEPT"])
    if me.ip and ipaddress.ip_address(me.ip).version == family:
        main.append(["-d", _host(me.ip), "-j", "ACCEPT"])
    except_chains: dict[tuple[str, tuple[str, ...]], str] = {}
    for a in allows:
        match = (["-d", a.cidr] if a.cidr else []) + _port_match(a.proto, a.port, a.end_port)
        if a.cidr and a.excepted:
            key = (a.cidr, a.excepted)
            if key not in except_chains:
                name = f"{base}-X{len(except_chains)}"
                except_chains[key] = name
                out.chains[name] = [["-d", e, "-j", "RETURN"] for e in a.excepted] + [["-j", "ACCEPT"]]
            main.append([*match, "-j", except_chains[key]])
        else:
            main.append([*match, "-j", "ACCEPT"])
    main.append(REJECT_TCP)
    main.append(["-j", "REJECT"])
    return out
