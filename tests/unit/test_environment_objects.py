import re

from nbkube.api import NotebookEnvironmentSpec
from nbkube.environment import objects
from nbkube.names import is_label_value

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _spec(**extra):
    return NotebookEnvironmentSpec.model_validate({"image": "nbkube/kernel-python:dev", **extra})


def test_gateway_pods_are_hardened():
    dep = objects.gateway_deployment("py", "team", "uid-1", _spec(), "py-gateway-token-0123456789")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_gateway_binds_its_pod_ip_and_reads_the_token_from_the_secret():
    dep = objects.gateway_deployment("py", "team", "uid-1", _spec(), "py-gateway-token-0123456789")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KG_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["KG_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "py-gateway-token-0123456789",
        "key": "token",
    }
    assert "value" not in env["KG_AUTH_TOKEN"]


def test_children_are_owned_by_the_environment_with_deterministic_names():
    for obj in (
        objects.gateway_deployment("py", "team", "uid-1", _spec(), "py-gateway-token-0123456789"),
        objects.token_secret("py", "team", "uid-1", "py-gateway-token-0123456789", "t"),
        objects.gateway_network_policy("py", "team", "uid-1", "nbkube", {"app": "op"}),
    ):
        owner = obj["metadata"]["ownerReferences"][0]
        assert owner["uid"] == "uid-1" and owner["kind"] == "NotebookEnvironment" and owner["controller"]
        assert obj["metadata"]["name"].startswith("py-gateway")
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nbkube"


def test_a_spec_change_changes_the_pod_template_so_pods_roll():
    a = objects.gateway_deployment("py", "team", "u", _spec(), "s")
    b = objects.gateway_deployment("py", "team", "u", _spec(env=[{"name": "X", "value": "1"}]), "s")
    c = objects.gateway_deployment("py", "team", "u", _spec(), "s")
    assert a["spec"]["template"] == c["spec"]["template"]
    assert (
        a["spec"]["template"]["metadata"]["annotations"] != b["spec"]["template"]["metadata"]["annotations"]
    )


def test_network_policy_admits_only_the_operator_to_the_gateway_port():
    policy = objects.gateway_network_policy("py", "team", "u", "nbkube", {"app.kubernetes.io/name": "nbkube"})
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "nbkube"}
    assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "nbkube"}
    assert rule["ports"] == [{"protocol": "TCP", "port": objects.GATEWAY_PORT}]


OPERATOR_LABELS = {"app.kubernetes.io/name": "nbkube", "app.kubernetes.io/component": "operator"}


def _egress_policy(egress=None):
    return objects.gateway_network_policy("py", "team", "u", "nbkube", OPERATOR_LABELS, egress)


def _matches(selector, labels):
    """A label selector (matchLabels, matchExpressions In/NotIn) against a set of labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels and labels[expr["key"]] in expr["values"]
        if present != (expr["operator"] == "In"):
            return False
    return True


def _pod_peer_admits(policy, namespace, pod_labels):
    """Whether any egress peer with selectors admits a pod (ipBlocks left out)."""
    ns_labels = {"kubernetes.io/metadata.name": namespace}
    for rule in policy["spec"]["egress"]:
        for peer in rule.get("to") or []:
            if "ipBlock" in peer:
                continue
            if _matches(peer.get("namespaceSelector", {}), ns_labels) and _matches(
                peer.get("podSelector", {}), pod_labels
            ):
                return True
    return False


def test_gateway_egress_is_restricted_by_default_and_excludes_the_operators_pods():
    policy = _egress_policy()
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    dns, anywhere_else = policy["spec"]["egress"]
    assert dns == {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    assert "ports" not in anywhere_else  # every port, but only to these peers
    assert not _pod_peer_admits(policy, "nbkube", OPERATOR_LABELS)
    assert not _pod_peer_admits(policy, "nbkube", {**OPERATOR_LABELS, "pod-template-hash": "abc"})
    # everything else stays reachable: other namespaces, other pods of the operator's namespace
    assert _pod_peer_admits(policy, "team", OPERATOR_LABELS)
    assert _pod_peer_admits(policy, "nbkube", {"app.kubernetes.io/name": "nbkube"})
    assert _pod_peer_admits(policy, "nbkube", {"app": "other"})
    blocks = [p["ipBlock"] for p in anywhere_else["to"] if "ipBlock" in p]
    assert blocks == [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]


def test_gateway_egress_denies_the_configured_addresses_and_adds_the_extra_rules():
    extra = {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    egress = objects.GatewayEgress(
        denied_cidrs=("172.18.0.2/32", "10.96.0.0/12", "fd00::/8", "10.96.0.0/12"), extra_rules=(extra,)
    )
    rules = _egress_policy(egress)["spec"]["egress"]
    blocks = [p["ipBlock"] for p in rules[1]["to"] if "ipBlock" in p]
    assert blocks == [
        {"cidr": "0.0.0.0/0", "except": ["10.96.0.0/12", "172.18.0.2/32"]},
        {"cidr": "::/0", "except": ["fd00::/8"]},
    ]
    assert rules[-1] == extra


def test_gateway_egress_denying_a_whole_family_drops_its_block_and_allow_all_drops_the_policy():
    rules = _egress_policy(objects.GatewayEgress(denied_cidrs=("::/0",)))["spec"]["egress"]
    assert [p["ipBlock"] for p in rules[1]["to"] if "ipBlock" in p] == [{"cidr": "0.0.0.0/0"}]
    policy = _egress_policy(objects.GatewayEgress(allow_all=True))
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert "egress" not in policy["spec"]


def test_a_name_too_long_for_a_label_value_is_refused_with_a_reason():
    assert objects.name_problem("a" * 63) is None
    problem = objects.name_problem("a" * 64)
    assert problem is not None and "64 characters" in problem and "at most 63" in problem
    problem = objects.name_problem("a" * 253)
    assert problem is not None and "253 characters" in problem and "nbkube.io/environment" in problem


def test_every_label_and_name_derived_from_a_63_character_environment_name_fits():
    name = ("a." * 40)[:62] + "b"  # dots too: an object name's every character is a label value's
    assert objects.name_problem(name) is None
    spec = _spec()
    children = [
        objects.token_secret(name, "team", "uid", f"{name}-gateway-token-{'0' * 10}", "t"),
        objects.gateway_deployment(name, "team", "uid", spec, "secret"),
        objects.gateway_network_policy(name, "team", "uid", "nbkube", {"app": "op"}, objects.GatewayEgress()),
    ]
    for child in children:
        meta = child["metadata"]
        assert len(meta["name"]) <= 253 and DNS_SUBDOMAIN.match(meta["name"]), meta["name"]
        assert all(is_label_value(v) for v in meta["labels"].values()), meta["labels"]
    template = children[1]["spec"]["template"]["metadata"]["labels"]
    assert all(is_label_value(v) for v in template.values()) and template[objects.ENVIRONMENT_LABEL] == name


def test_only_an_object_whose_controller_is_the_environment_counts_as_its_own():
    ref = objects.owner_reference("NotebookEnvironment", "py", "uid-1")
    assert objects.controlled_by({"metadata": {"ownerReferences": [ref]}}, "uid-1")
    assert not objects.controlled_by({"metadata": {"ownerReferences": [ref]}}, "uid-2")
    assert not objects.controlled_by(
        {"metadata": {"ownerReferences": [{**ref, "controller": False}]}}, "uid-1"
    )
    assert not objects.controlled_by({"metadata": {}}, "uid-1")
