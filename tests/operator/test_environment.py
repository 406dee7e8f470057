"""NotebookEnvironment: spec changes roll the gateway pods, deletion removes what it owns, a lost
gateway pod costs a run one retry, not its result, and objects nbkube does not control are never
taken over."""

import json
import time

from helpers import (
    condition,
    environment,
    events,
    get,
    run,
    wait_env_ready,
    wait_env_reason,
    wait_for,
    wait_run_finished,
)


def _gateway_pods(kubectl, namespace, env="py"):
    pods = kubectl.json("get", "pods", "-l", f"nbkube.io/environment={env}", namespace=namespace)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def test_an_environment_owns_a_hardened_gateway_with_its_token_and_network_policy(
    kubectl, namespace, operator
):
    kubectl.apply(environment(), namespace=namespace)
    env = wait_env_ready(kubectl, namespace)
    assert env["status"]["observedGeneration"] == 1 and env["status"]["ready"] == "1/1"
    uid = env["metadata"]["uid"]
    token_secret = env["status"]["tokenSecret"]
    assert token_secret.startswith("py-gateway-token-")
    for kind, name in (
        ("deployment", "py-gateway"),
        ("secret", token_secret),
        ("networkpolicy", "py-gateway"),
    ):
        obj = get(kubectl, kind, name, namespace)
        assert obj is not None, f"{kind}/{name} missing"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
    (pod,) = _gateway_pods(kubectl, namespace)
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    token = get(kubectl, "secret", token_secret, namespace)["data"]["token"]
    assert token not in json.dumps(env["status"])  # nothing secret in status
    policy = get(kubectl, "networkpolicy", "py-gateway", namespace)["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]


def test_a_spec_change_rolls_the_gateway_pods_and_deletion_removes_everything(kubectl, namespace, operator):
    kubectl.apply(environment(), namespace=namespace)
    token_secret = wait_env_ready(kubectl, namespace)["status"]["tokenSecret"]
    (before,) = _gateway_pods(kubectl, namespace)
    kubectl.apply(
        environment(env=[{"name": "MPLBACKEND", "value": "Agg"}, {"name": "EXTRA", "value": "1"}]),
        namespace=namespace,
    )

    def rolled():
        pods = _gateway_pods(kubectl, namespace)
        ready = [
            p
            for p in pods
            if p["metadata"]["name"] != before["metadata"]["name"]
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return ready if len(pods) == 1 and ready else None

    (after,) = wait_for("the gateway pod to roll", rolled, 120)
    env_vars = {e["name"]: e.get("value") for e in after["spec"]["containers"][0]["env"]}
    assert env_vars["EXTRA"] == "1"
    env = wait_env_ready(kubectl, namespace)
    assert env["status"]["observedGeneration"] == 2

    kubectl("delete", "nbenv", "py", namespace=namespace)
    wait_for(
        "owned objects to be garbage collected",
        lambda: (
            all(
                get(kubectl, kind, name, namespace) is None
                for kind, name in (
                    ("deployment", "py-gateway"),
                    ("secret", token_secret),
                    ("networkpolicy", "py-gateway"),
                )
            )
            and not _gateway_pods(kubectl, namespace)
        ),
        120,
    )


def test_a_gateway_pod_lost_mid_run_costs_one_retry_on_a_new_pod(kubectl, namespace, operator):
    kubectl.apply(environment(), namespace=namespace)
    wait_env_ready(kubectl, namespace)
    (pod,) = _gateway_pods(kubectl, namespace)
    cells = ["import time\nfor i in range(20):\n    time.sleep(0.25)", "print('finished')"]
    kubectl.apply(run("lost", cells, retries=1), namespace=namespace)

    def running():
        obj = get(kubectl, "nbrun", "lost", namespace)
        return any(c["state"] == "running" for c in ((obj or {}).get("status") or {}).get("cells", []))

    wait_for("the long cell to start", running, 60, 0.1)
    kubectl("delete", "pod", pod["metadata"]["name"], "--grace-period=1", "--wait=false", namespace=namespace)
    obj = wait_run_finished(kubectl, namespace, "lost", 180)
    status = obj["status"]
    assert status["state"] == "Succeeded", json.dumps(status, indent=1)
    assert status["attempt"] == 2
    assert status["cells"][-1]["summary"] == "finished"
    reasons = [e["reason"] for e in kubectl.json("get", "events", namespace=namespace)["items"]]
    assert "Retrying" in reasons


def _unchanged(before, after):
    """Nothing of the object but what Kubernetes' own controllers write (a Deployment's status, which
    moves its resourceVersion) changed, and no manager but kubectl and those controllers wrote to it."""
    assert after is not None, "the foreign object was deleted"
    for key in ("generation", "labels", "annotations", "ownerReferences", "finalizers"):
        assert after["metadata"].get(key) == before["metadata"].get(key), key
    assert after.get("spec") == before.get("spec") and after.get("data") == before.get("data")
    managers = {m["manager"] for m in after["metadata"].get("managedFields", [])}
    assert managers <= {
        "kubectl",
        "kubectl-client-side-apply",
        "kubectl-create",
        "kube-controller-manager",
    }, managers


def _delete_environment_and_wait_for_its_children(kubectl, namespace, kinds):
    kubectl("delete", "nbenv", "py", namespace=namespace)
    wait_for("the environment to be gone", lambda: get(kubectl, "nbenv", "py", namespace) is None, 60)

    def owned_left():
        left = []
        for kind in kinds:
            for obj in kubectl.json("get", kind, namespace=namespace)["items"]:
                if any(
                    r.get("kind") == "NotebookEnvironment"
                    for r in obj["metadata"].get("ownerReferences") or []
                ):
                    left.append(f"{kind}/{obj['metadata']['name']}")
        return not left

    wait_for("the environment's own children to be garbage collected", owned_left, 120)


FOREIGN_DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "py-gateway", "labels": {"team": "admin"}},
    "spec": {
        "replicas": 0,
        "selector": {"matchLabels": {"app": "admin-tool"}},
        "template": {
            "metadata": {"labels": {"app": "admin-tool"}},
            "spec": {"containers": [{"name": "tool", "image": "registry.example.com/admin/tool:1"}]},
        },
    },
}


def test_a_foreign_deployment_of_the_gateways_name_is_never_modified_nor_deleted(
    kubectl, namespace, operator
):
    kubectl.apply(FOREIGN_DEPLOYMENT, namespace=namespace)
    before = get(kubectl, "deployment", "py-gateway", namespace)
    kubectl.apply(environment(), namespace=namespace)
    env = wait_env_reason(kubectl, namespace, "ChildConflict")
    ready = condition(env, "Ready")
    assert ready["status"] == "False"
    assert f"Deployment {namespace}/py-gateway already exists and is not controlled" in ready["message"]
    warnings = [e for e in events(kubectl, namespace, "py") if e["type"] == "Warning"]
    assert any(e["reason"] == "ChildConflict" and "py-gateway" in e["message"] for e in warnings), warnings
    time.sleep(6)  # a status timer round or more: still left alone
    _unchanged(before, get(kubectl, "deployment", "py-gateway", namespace))
    assert not [
        e
        for e in kubectl.json("get", "secrets", namespace=namespace)["items"]
        if e["metadata"]["name"].startswith("py-gateway-token")
    ]

    _delete_environment_and_wait_for_its_children(kubectl, namespace, ["networkpolicies", "secrets"])
    time.sleep(3)
    _unchanged(before, get(kubectl, "deployment", "py-gateway", namespace))


def test_a_foreign_network_policy_blocks_the_environment_until_it_is_gone(kubectl, namespace, operator):
    foreign = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "py-gateway"},
        "spec": {"podSelector": {"matchLabels": {"app": "admin-tool"}}, "policyTypes": ["Ingress"]},
    }
    kubectl.apply(foreign, namespace=namespace)
    before = get(kubectl, "networkpolicy", "py-gateway", namespace)
    kubectl.apply(environment(), namespace=namespace)
    env = wait_env_reason(kubectl, namespace, "ChildConflict")
    assert f"NetworkPolicy {namespace}/py-gateway already exists" in condition(env, "Ready")["message"]
    assert get(kubectl, "deployment", "py-gateway", namespace) is None  # no gateway pod runs unfenced
    time.sleep(6)
    _unchanged(before, get(kubectl, "networkpolicy", "py-gateway", namespace))

    kubectl("delete", "networkpolicy", "py-gateway", namespace=namespace)
    env = wait_env_ready(kubectl, namespace)
    policy = get(kubectl, "networkpolicy", "py-gateway", namespace)
    assert policy["metadata"]["ownerReferences"][0]["uid"] == env["metadata"]["uid"]


def test_a_foreign_secret_named_like_a_token_secret_never_reaches_the_gateway_pods(
    kubectl, namespace, operator
):
    kubectl(
        "create",
        "secret",
        "generic",
        "py-gateway-token",
        "--from-literal=token=the-admins-secret",
        namespace=namespace,
    )
    before = get(kubectl, "secret", "py-gateway-token", namespace)
    kubectl.apply(environment(), namespace=namespace)
    env = wait_env_ready(kubectl, namespace)
    token_secret = env["status"]["tokenSecret"]
    assert token_secret != "py-gateway-token"
    deployment = get(kubectl, "deployment", "py-gateway", namespace)
    for pod_spec in [
        deployment["spec"]["template"]["spec"],
        *(p["spec"] for p in _gateway_pods(kubectl, namespace)),
    ]:
        refs = json.dumps(pod_spec)
        assert '"py-gateway-token"' not in refs and "the-admins-secret" not in refs
        env_vars = {e["name"]: e for e in pod_spec["containers"][0]["env"]}
        assert env_vars["KG_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == token_secret
    _unchanged(before, get(kubectl, "secret", "py-gateway-token", namespace))

    _delete_environment_and_wait_for_its_children(
        kubectl, namespace, ["deployments", "networkpolicies", "secrets"]
    )
    time.sleep(3)
    _unchanged(before, get(kubectl, "secret", "py-gateway-token", namespace))


def test_an_environment_whose_name_cannot_be_a_label_value_is_invalid_not_retried(
    kubectl, namespace, operator
):
    name = "e" * 64
    kubectl.apply(environment(name), namespace=namespace)
    env = wait_env_reason(kubectl, namespace, "InvalidSpec", name=name)
    ready = condition(env, "Ready")
    assert (
        ready["status"] == "False"
        and "64 characters" in ready["message"]
        and "at most 63" in ready["message"]
    )
    warnings = [e for e in events(kubectl, namespace, name) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["InvalidSpec"], warnings
    assert get(kubectl, "networkpolicy", f"{name}-gateway", namespace) is None


def test_the_operator_may_get_secrets_runs_name_but_never_list_watch_or_change_them(
    kubectl, namespace, operator
):
    account = f"system:serviceaccount:{operator.namespace}:{operator.service_account}"

    def can(*args, ns):
        done = kubectl("auth", "can-i", *args, f"--as={account}", namespace=ns, check=False)
        return done.stdout.strip() == "yes"

    assert can("create", "secrets", ns=namespace)
    assert can("get", "secrets", ns=namespace)  # the ones a NotebookRun names (spec.env, spec.files)
    for verb in ("list", "watch", "patch", "update", "delete"):
        assert not can(verb, "secrets", ns=namespace), verb
        assert not can(verb, "secrets", ns=operator.namespace), verb
    assert can("get", "secret/nbkube-gateway-token-key", ns=operator.namespace)
