"""NotebookEnvironment: spec changes roll the gateway pods, deletion removes what it owns, and a lost
gateway pod costs a run one retry, not its result."""

import json

from helpers import environment, get, run, wait_env_ready, wait_for, wait_run_finished


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
    for kind, name in (
        ("deployment", "py-gateway"),
        ("secret", "py-gateway-token"),
        ("networkpolicy", "py-gateway"),
    ):
        obj = get(kubectl, kind, name, namespace)
        assert obj is not None, f"{kind}/{name} missing"
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid
    (pod,) = _gateway_pods(kubectl, namespace)
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert pod["spec"]["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    token = get(kubectl, "secret", "py-gateway-token", namespace)["data"]["token"]
    assert token not in json.dumps(env["status"])  # nothing secret in status


def test_a_spec_change_rolls_the_gateway_pods_and_deletion_removes_everything(kubectl, namespace, operator):
    kubectl.apply(environment(), namespace=namespace)
    wait_env_ready(kubectl, namespace)
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
                    ("secret", "py-gateway-token"),
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
