"""The node agent's NetworkPolicy egress translation (nodeagent/netpol.py), without a cluster: policies,
pods, namespaces and local listening sockets in, iptables chains out, read back by a small interpreter of
the rules it writes (`verdict`), so each test says where a pod may connect."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from nbkube.environment import objects
from nbkube_testenv.nodeagent import firewall, netpol
from nbkube_testenv.nodeagent.netpol import Listener, PodRef

BASE = "NBK-0123abcd-9876543210"
OPERATOR_NS = "nbkube-system"
OPERATOR_LABELS = {"app.kubernetes.io/name": "nbkube"}

GATEWAY = PodRef("evil", objects.gateway_labels("py"), "127.5.0.2", "uid-gw")
OTHER_TENANT = PodRef("team-a", {"app": "x"}, "127.5.0.3", "uid-a")
OPERATOR_POD = PodRef(OPERATOR_NS, dict(OPERATOR_LABELS), "127.5.0.4", "uid-op")
NAMESPACES = {ns: {"kubernetes.io/metadata.name": ns} for ns in ("evil", "team-a", OPERATOR_NS)}
PODS = [GATEWAY, OTHER_TENANT, OPERATOR_POD]


def gateway_policy() -> dict[str, Any]:
    policy = objects.gateway_network_policy(
        "py",
        "evil",
        "uid-env",
        OPERATOR_NS,
        OPERATOR_LABELS,
        objects.GatewayEgress(denied_cidrs=("127.0.0.1/32",)),
    )
    assert netpol.selector_matches(policy["spec"]["podSelector"], GATEWAY.labels)
    return policy


def policy(
    namespace: str,
    egress: list[dict[str, Any]] | None,
    selector: dict[str, Any] | None = None,
    types: tuple[str, ...] = ("Egress",),
    name: str = "p",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": selector or {}, "policyTypes": list(types)}
    if egress is not None:
        spec["egress"] = egress
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def verdict(chains: netpol.Chains | None, dest: str, port: int, proto: str = "tcp") -> str:
    """What the chains do with a new connection (or datagram) to dest:port, as iptables would."""
    if chains is None:
        return "ACCEPT"  # no chain: the pod's egress is not restricted

    def run(name: str) -> str | None:
        for rule in chains.chains[name]:
            args = dict(zip(rule[::2], rule[1::2], strict=False))
            if args.get("-m") == "conntrack":
                continue  # a new connection is not ESTABLISHED
            if "-o" in args and not ipaddress.ip_address(dest).is_loopback:
                continue
            if "-d" in args and ipaddress.ip_address(dest) not in ipaddress.ip_network(args["-d"]):
                continue
            if "-p" in args and args["-p"] != proto:
                continue
            if "--dport" in args:
                low, _, high = args["--dport"].partition(":")
                if not int(low) <= port <= int(high or low):
                    continue
            target = args["-j"]
            if target == "RETURN":
                return None
            if target in ("ACCEPT", "REJECT"):
                return target
            result = run(target)
            if result is not None:
                return result
        return None

    return run(BASE) or "ACCEPT"


def chains_for(
    pod: PodRef,
    policies: list[dict[str, Any]],
    listeners: list[Listener] = (),  # type: ignore[assignment]
    family: int = 4,
    pods: list[PodRef] = PODS,
) -> netpol.Chains | None:
    return netpol.pod_chains(BASE, pod, policies, pods, NAMESPACES, listeners, family)


# -- selectors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {"a": "1"}, True),
        (None, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
        (
            {"matchLabels": {"a": "1"}, "matchExpressions": [{"key": "b", "operator": "Exists"}]},
            {"a": "1"},
            False,
        ),
    ],
)
def test_label_selectors(selector: dict[str, Any] | None, labels: dict[str, str], matches: bool) -> None:
    assert netpol.selector_matches(selector, labels) is matches


def test_a_pod_no_egress_policy_selects_gets_no_chain() -> None:
    ingress_only = policy("evil", None, types=("Ingress",))
    elsewhere = policy("team-a", [])
    other_labels = policy("evil", [], selector={"matchLabels": {"app": "other"}})
    assert chains_for(GATEWAY, [ingress_only, elsewhere, other_labels]) is None
    # without policyTypes (as a client may send it), egress rules make it an egress policy
    untyped = {"metadata": {"namespace": "evil", "name": "u"}, "spec": {"podSelector": {}, "egress": []}}
    assert chains_for(GATEWAY, [untyped]) is not None


def test_an_egress_policy_without_rules_denies_all_but_replies_and_the_pod_itself() -> None:
    chains = chains_for(GATEWAY, [policy("evil", [])])
    assert chains is not None
    main = chains.chains[BASE]
    assert main[0] == ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
    assert main[-2:] == [netpol.REJECT_TCP, ["-j", "REJECT"]]
    assert verdict(chains, "10.1.2.3", 443) == "REJECT"
    assert verdict(chains, OTHER_TENANT.ip, 8888) == "REJECT"
    assert verdict(chains, GATEWAY.ip, 8888) == "ACCEPT"
    assert verdict(chains, "127.0.0.1", 40000) == "ACCEPT"  # its own loopback (a kernel it started)


# -- the gateway policy the operator renders ------------------------------------------------------------
def test_the_gateway_policy_keeps_a_kernel_off_the_node_and_the_operator_and_lets_it_reach_the_rest() -> None:
    listeners = [
        Listener("tcp", "127.0.0.1", 6443),  # the API server
        Listener("tcp", "127.0.0.1", 9100),  # the operator's metrics
        Listener("tcp", "0.0.0.0", 22),  # a host service on every address
        Listener("tcp", "127.0.0.1", 50001, GATEWAY.uid),  # the gateway's own kernel
        Listener("tcp", "127.0.0.1", 50002, OTHER_TENANT.uid),  # another tenant's kernel
        Listener("tcp", OTHER_TENANT.ip, 8888, OTHER_TENANT.uid),  # another tenant's gateway port
        Listener("tcp", "127.0.0.2", 7000),  # a test's server, a host of its own
        Listener("udp", "127.0.0.53", 53),  # a resolver
    ]
    chains = chains_for(GATEWAY, [gateway_policy()], listeners)
    assert chains is not None
    assert chains.warnings == []
    for port in (6443, 9100, 22, 50002):
        assert verdict(chains, "127.0.0.1", port) == "REJECT", port
    assert verdict(chains, GATEWAY.ip, 22) == "REJECT"  # 0.0.0.0 answers at the pod's own address too
    assert verdict(chains, "127.0.0.1", 50001) == "ACCEPT"
    assert verdict(chains, OTHER_TENANT.ip, 8888) == "ACCEPT"  # pods of other namespaces
    assert verdict(chains, OPERATOR_POD.ip, 8888) == "ACCEPT"  # 0.0.0.0/0 matches pod IPs here (as Calico)
    assert verdict(chains, "127.0.0.2", 7000) == "ACCEPT"
    assert verdict(chains, "127.0.0.53", 53, "udp") == "ACCEPT"
    assert verdict(chains, "93.184.216.34", 443) == "ACCEPT"
    assert verdict(chains, "127.0.0.1", 9100, "udp") == "ACCEPT"  # no UDP socket there: the pod's own
    # the denied address itself, whoever listens: RETURNed by the except chain, then rejected
    assert verdict(chains, "127.0.0.1", 6443) == "REJECT"
    except_chain = chains.chains[f"{BASE}-X0"]
    assert except_chain == [["-d", "127.0.0.1/32", "-j", "RETURN"], ["-j", "ACCEPT"]]
    # only the sockets that change an outcome have a rule (a kernel's own port has none)
    assert len(chains.chains[f"{BASE}-L"]) == 4
    assert all(len(name) <= 28 for name in chains.chains)


def test_with_allow_all_the_gateway_has_no_egress_chain() -> None:
    policy_ = objects.gateway_network_policy(
        "py", "evil", "uid", OPERATOR_NS, OPERATOR_LABELS, objects.GatewayEgress(allow_all=True)
    )
    assert chains_for(GATEWAY, [policy_], [Listener("tcp", "127.0.0.1", 9100)]) is None


def test_policies_are_additive_a_second_one_opens_one_node_port() -> None:
    listeners = [Listener("tcp", "127.0.0.1", 9100), Listener("tcp", "127.0.0.1", 6443)]
    metrics = policy("evil", [{"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}], "ports": [{"port": 9100}]}])
    chains = chains_for(GATEWAY, [gateway_policy(), metrics], listeners)
    assert verdict(chains, "127.0.0.1", 9100) == "ACCEPT"
    assert verdict(chains, "127.0.0.1", 9100, "udp") == "ACCEPT"
    assert verdict(chains, "127.0.0.1", 6443) == "REJECT"


def test_a_wildcard_host_socket_yields_to_a_pod_socket_bound_to_its_own_address() -> None:
    listeners = [Listener("tcp", "0.0.0.0", 8080), Listener("tcp", OTHER_TENANT.ip, 8080, OTHER_TENANT.uid)]
    chains = chains_for(GATEWAY, [gateway_policy()], listeners)
    assert verdict(chains, OTHER_TENANT.ip, 8080) == "ACCEPT"  # that pod's socket: the policy allows it
    assert verdict(chains, "127.0.0.1", 8080) == "REJECT"  # the host's
    assert verdict(chains, "10.9.9.9", 8080) == "ACCEPT"  # not loopback: no listener rule applies


def test_another_pods_wildcard_socket_answers_only_at_its_ip() -> None:
    listeners = [Listener("tcp", "0.0.0.0", 8080, OTHER_TENANT.uid)]
    chains = chains_for(GATEWAY, [policy("evil", [{"to": []}])], listeners)
    assert verdict(chains, OTHER_TENANT.ip, 8080) == "ACCEPT"
    assert verdict(chains, "127.0.0.1", 8080) == "REJECT"  # that pod's loopback, in a real cluster
    assert verdict(chains, GATEWAY.ip, 8080) == "REJECT"


# -- peers and ports --------------------------------------------------------------------------------------
def test_pod_and_namespace_selectors_resolve_to_the_current_pod_addresses() -> None:
    same_ns = PodRef("evil", {"role": "db"}, "127.5.0.9", "uid-db")
    no_ip = PodRef("evil", {"role": "db"}, "", "uid-new")
    pods = [*PODS, same_ns, no_ip]
    rules = [
        {
            "to": [{"podSelector": {"matchLabels": {"role": "db"}}}],
            "ports": [{"protocol": "TCP", "port": 5432}],
        },
        {
            "to": [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "team-a"}},
                    "podSelector": {"matchLabels": {"app": "x"}},
                }
            ]
        },
    ]
    chains = chains_for(GATEWAY, [policy("evil", rules)], pods=pods)
    assert verdict(chains, same_ns.ip, 5432) == "ACCEPT"
    assert verdict(chains, same_ns.ip, 5433) == "REJECT"
    assert verdict(chains, OTHER_TENANT.ip, 1) == "ACCEPT"
    assert verdict(chains, OPERATOR_POD.ip, 1) == "REJECT"
    allows, _ = netpol.allowed([policy("evil", rules)], pods, NAMESPACES, 4)
    assert {a.cidr for a in allows} == {"127.5.0.9/32", "127.5.0.3/32"}


def test_port_ranges_protocols_and_named_ports() -> None:
    rules = [
        {"ports": [{"protocol": "UDP", "port": 1000, "endPort": 1010}]},
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}], "ports": [{"port": "http"}]},
        {
            "to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
            "ports": [{"port": "https"}, {"port": 443}],
        },
        {"ports": [{"protocol": "SCTP"}]},
    ]
    chains = chains_for(GATEWAY, [policy("evil", rules)])
    assert chains is not None
    assert verdict(chains, "8.8.8.8", 1005, "udp") == "ACCEPT"
    assert verdict(chains, "8.8.8.8", 1011, "udp") == "REJECT"
    assert verdict(chains, "8.8.8.8", 1005, "tcp") == "REJECT"
    assert verdict(chains, "10.2.0.1", 443) == "ACCEPT"
    assert verdict(chains, "10.1.0.1", 443) == "REJECT"
    assert verdict(chains, "10.2.0.1", 80) == "REJECT"  # named ports are not resolved
    assert verdict(chains, "8.8.8.8", 9, "sctp") == "ACCEPT"
    assert ["-p", "udp", "--dport", "1000:1010", "-j", "ACCEPT"] in chains.chains[BASE]
    assert sorted(chains.warnings) == [
        "evil/p: named port 'http' is not enforced (skipped)",
        "evil/p: named port 'https' is not enforced (skipped)",
    ]


def test_ipv6_gets_its_own_chains_with_its_ip_blocks_only() -> None:
    listeners = [Listener("tcp", "::", 9100), Listener("tcp", "::1", 50001, GATEWAY.uid)]
    v6 = chains_for(GATEWAY, [gateway_policy()], listeners, family=6)
    assert v6 is not None
    assert verdict(v6, "::1", 50001) == "ACCEPT"
    assert verdict(v6, "2001:db8::1", 443) == "ACCEPT"  # ::/0
    # the gateway policy denies only 127.0.0.1: the node's ::1 is allowed, as the policy says
    assert verdict(v6, "::1", 9100) == "ACCEPT"
    only_v4 = policy("evil", [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])
    assert verdict(chains_for(GATEWAY, [only_v4], family=6), "2001:db8::1", 443) == "REJECT"


def test_proc_net_addresses_decode() -> None:
    assert firewall._address("0100007F") == "127.0.0.1"
    assert firewall._address("00000000000000000000000000000000") == "::"
    assert firewall._address("00000000000000000000000001000000") == "::1"
    assert firewall._address("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    assert firewall.chain_name("0123abcd", "98765432-10ab-cdef-0000-000000000000") == BASE
