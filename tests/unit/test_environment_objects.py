from nbkube.api import NotebookEnvironmentSpec
from nbkube.environment import objects


def _spec(**extra):
    return NotebookEnvironmentSpec.model_validate({"image": "nbkube/kernel-python:dev", **extra})


def test_gateway_pods_are_hardened():
    dep = objects.gateway_deployment("py", "team", "uid-1", _spec())
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_gateway_binds_its_pod_ip_and_reads_the_token_from_the_secret():
    dep = objects.gateway_deployment("py", "team", "uid-1", _spec())
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KG_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["KG_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "py-gateway-token", "key": "token"}
    assert "value" not in env["KG_AUTH_TOKEN"]


def test_children_are_owned_by_the_environment_with_deterministic_names():
    for obj in (
        objects.gateway_deployment("py", "team", "uid-1", _spec()),
        objects.token_secret("py", "team", "uid-1", "t"),
        objects.gateway_network_policy("py", "team", "uid-1", "nbkube", {"app": "op"}),
    ):
        owner = obj["metadata"]["ownerReferences"][0]
        assert owner["uid"] == "uid-1" and owner["kind"] == "NotebookEnvironment" and owner["controller"]
        assert obj["metadata"]["name"].startswith("py-gateway")
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "nbkube"


def test_a_spec_change_changes_the_pod_template_so_pods_roll():
    a = objects.gateway_deployment("py", "team", "u", _spec())
    b = objects.gateway_deployment("py", "team", "u", _spec(env=[{"name": "X", "value": "1"}]))
    c = objects.gateway_deployment("py", "team", "u", _spec())
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
    assert policy["spec"]["policyTypes"] == ["Ingress"]
