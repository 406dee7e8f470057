"""Tenants on one cluster: results, clones and logs reach only whom RBAC allows, through the API server.

Two namespaces, each with an environment and a finished run whose output holds a secret of its own.
Users are real: a ServiceAccount token and a client-certificate user, each bound to the built-in `view`
role in team-a only (nbkube's ClusterRoles aggregate into it); a ServiceAccount with no role; nobody.
A kernel of a third namespace tries every port of the operator and the API server: the node agent
enforces the gateway's NetworkPolicy egress, so every connection is refused, unless a second policy
opens a port.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers import environment, run, wait_env_ready, wait_run_finished
from nbkube.userapi import paths
from nbkube_testenv.components import NODE_NAME
from nbkube_testenv.nodeagent.enforcer import ENFORCED, ENFORCEMENT_ANNOTATION
from nbkube_testenv.userapi import ApiUser


def _namespace(kubectl: Any, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    kubectl.apply(environment(warmKernels=1), namespace=name)
    return name


@pytest.fixture(scope="module")
def tenants(_session_kubectl, operator, cluster, tmp_path_factory):  # type: ignore[no-untyped-def]
    kubectl = _session_kubectl
    a, b = _namespace(kubectl, "team-a"), _namespace(kubectl, "team-b")
    secret = {ns: f"SECRET-{ns}-{secrets.token_hex(8)}" for ns in (a, b)}
    for ns in (a, b):
        wait_env_ready(kubectl, ns)
        cells = [f"print({secret[ns]!r})", "import time\nfor i in range(3):\n    print('tick', i)"]
        kubectl.apply(run("work", cells, parameters={"db_password": secret[ns]}), namespace=ns)
    finished = {ns: wait_run_finished(kubectl, ns, "work") for ns in (a, b)}
    for ns in (a, b):
        assert finished[ns]["status"]["state"] == "Succeeded", json.dumps(finished[ns]["status"])
    workdir = tmp_path_factory.mktemp("users")
    kubectl("create", "serviceaccount", "viewer", namespace=a)
    kubectl("create", "serviceaccount", "nobody", namespace=a)
    kubectl(
        "create", "rolebinding", "viewer", "--clusterrole=view", f"--serviceaccount={a}:viewer", namespace=a
    )
    kubectl("create", "rolebinding", "carol", "--clusterrole=view", "--user=carol", namespace=a)
    users = {
        "token": ApiUser.from_kubeconfig(
            cluster.service_account_kubeconfig(a, "viewer", workdir / "viewer.kubeconfig")
        ),
        "certificate": ApiUser.from_kubeconfig(
            cluster.client_certificate_kubeconfig(
                "carol", ("team-a-people",), workdir / "carol.kubeconfig", a
            )
        ),
        "roleless": ApiUser.from_kubeconfig(
            cluster.service_account_kubeconfig(a, "nobody", workdir / "nobody.kubeconfig")
        ),
        "anonymous": ApiUser.anonymous(cluster),
    }
    yield {"a": a, "b": b, "secret": secret, "runs": finished, "users": users, "workdir": workdir}
    for ns in (a, b):
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("kind", ["token", "certificate"])
def test_a_viewer_of_team_a_fetches_clones_and_follows_logs_there_and_is_refused_in_team_b(
    tenants: dict[str, Any], kind: str, tmp_path: Path
) -> None:
    user: ApiUser = tenants["users"][kind]
    a, b, secret = tenants["a"], tenants["b"], tenants["secret"]
    result = tenants["runs"][a]["status"]["result"]

    status, body = user.file(a, result["path"], result["commit"])
    assert status == 200, body[:300]
    nb = nbformat.reads(body.decode(), as_version=4)
    assert secret[a] in json.dumps(nb.cells[1].outputs)

    clone = user.clone(a, tmp_path / "a")
    assert clone.returncode == 0, clone.stderr
    assert (tmp_path / "a" / result["path"]).is_file()
    assert secret[b] not in _all_objects(tmp_path / "a")  # the clone holds nothing of team-b

    events = list(user.log_events(a, "work", follow=True))
    outputs = "".join(e["output"].get("text", "") for e in events if e["event"] == "output")
    assert secret[a] in outputs and "tick 2" in outputs
    assert events[-1] == {"event": "end", "state": "Succeeded", "reason": "Succeeded"}

    b_result = tenants["runs"][b]["status"]["result"]
    for status, body in (
        user.file(b, b_result["path"], b_result["commit"]),
        user.get(paths.run_log_path(b, "work"), {"follow": "true"}),
        user.get(paths.repository_path(b, "runs")),
        user.get(paths.repository_path(b, "git") + "/info/refs", {"service": "git-upload-pack"}),
    ):
        assert status == 403, body[:300]
        assert secret[b].encode() not in body
    refused = user.clone(b, tmp_path / "b")
    assert refused.returncode != 0 and "403" in refused.stderr
    # A path that does not exist in team-b is refused the same way: nothing says what exists there.
    status, _ = user.file(b, f"{b}/no-such-run/notebook.ipynb")
    assert status == 403


def _all_objects(clone: Path) -> str:
    listed = subprocess.run(
        ["git", "-C", str(clone), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return listed.stdout.decode(errors="replace")


def test_unauthenticated_and_roleless_callers_get_nothing(tenants: dict[str, Any], tmp_path: Path) -> None:
    a, secret = tenants["a"], tenants["secret"]
    result = tenants["runs"][a]["status"]["result"]
    for kind, expected in (("anonymous", (401, 403)), ("roleless", (403,))):
        user: ApiUser = tenants["users"][kind]
        for status, body in (
            user.file(a, result["path"], result["commit"]),
            user.get(paths.run_log_path(a, "work")),
            user.get(paths.repository_path(a, "runs")),
        ):
            assert status in expected, (kind, status, body[:200])
            assert secret[a].encode() not in body
        assert user.clone(a, tmp_path / kind).returncode != 0


def test_the_run_list_is_per_namespace_and_the_cross_namespace_list_is_gone(
    tenants: dict[str, Any], cluster: Any
) -> None:
    a, b = tenants["a"], tenants["b"]
    viewer: ApiUser = tenants["users"]["token"]
    status, body = viewer.get(paths.repository_path(a, "runs"))
    assert status == 200
    listed = json.loads(body)
    assert {r["namespace"] for r in listed} == {a}
    assert tenants["secret"][b] not in body.decode()
    status, _ = viewer.get(f"{paths.PREFIX}/runs")
    assert status == 403  # a cluster-wide list: RBAC refuses it before it reaches the operator
    status, _ = ApiUser.admin(cluster).get(f"{paths.PREFIX}/runs")
    assert status == 404  # and the operator serves none, to anybody


def test_a_ref_that_would_make_git_search_history_is_refused(tenants: dict[str, Any]) -> None:
    user: ApiUser = tenants["users"]["token"]
    a = tenants["a"]
    path = tenants["runs"][a]["status"]["result"]["path"]
    for ref in ("HEAD^{/(.*)*(.*)*(.*)*\\1\\2\\3z}", "HEAD~1", "main@{0}", "HEAD^1", "--output=/tmp/x"):
        status, body = user.file(a, path, ref)
        assert status == 400, (ref, status, body[:200])
    status, _ = user.file(a, path, "main")
    assert status == 200


def _egress_enforced(kubectl: Any) -> None:
    """Fails (never skips) where the node agent cannot enforce NetworkPolicies: CI is such a machine."""
    node = kubectl.json("get", "node", NODE_NAME)
    status = node["metadata"].get("annotations", {}).get(ENFORCEMENT_ANNOTATION, "no annotation")
    assert status == ENFORCED, f"the node agent does not enforce NetworkPolicy egress: {status}"


PROBE = """
import ssl, time, urllib.request, urllib.error
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def get(url):  # one line: the status and the body, or REFUSED, or the error's name
    try:
        with urllib.request.urlopen(url, timeout=5, context=ctx if url.startswith("https") else None) as r:
            return f"{{r.status}} {{' '.join(r.read(100000).decode(errors='replace').split())}}"
    except urllib.error.HTTPError as e:
        return f"{{e.code}} {{' '.join(e.read(100000).decode(errors='replace').split())}}"
    except Exception as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (ConnectionRefusedError, ConnectionResetError)):
            return "REFUSED"
        return type(reason).__name__
deadline = time.monotonic() + 60
while {wait_for!r} and get({wait_for!r}) == "REFUSED" and time.monotonic() < deadline:
    time.sleep(0.2)  # until the agent has applied a policy added just before
for port in {ports!r}:
    for scheme in ("http", "https"):
        for target in {targets!r}:
            url = f"{{scheme}}://127.0.0.1:{{port}}{{target}}"
            print(url, get(url))
"""


def _probe(
    kubectl: Any, namespace: str, ports: list[int], targets: list[str], wait_for: str = ""
) -> list[str]:
    """Runs the probe cell in the namespace's environment: one line per url, what it got."""
    kubectl.apply(
        run("probe", [PROBE.format(ports=ports, targets=targets, wait_for=wait_for)]), namespace=namespace
    )
    finished = wait_run_finished(kubectl, namespace, "probe", timeout=300)
    assert finished["status"]["state"] == "Succeeded", json.dumps(finished["status"])
    status, body = ApiUser.admin(kubectl.info).file(
        namespace, finished["status"]["result"]["path"], finished["status"]["result"]["commit"]
    )
    assert status == 200
    cells = nbformat.reads(body.decode(), 4).cells
    return "".join(o.get("text", "") for o in cells[0].outputs).splitlines()


def test_a_kernel_of_another_namespace_gets_no_byte_of_a_tenants_results(
    tenants: dict[str, Any], _session_kubectl, operator, cluster
) -> None:  # type: ignore[no-untyped-def]
    """The gateway's NetworkPolicy, enforced: not one connection to the operator or the API server."""
    kubectl = _session_kubectl
    _egress_enforced(kubectl)
    a = tenants["a"]
    result = tenants["runs"][a]["status"]["result"]
    evil = _namespace(kubectl, "evil")
    try:
        wait_env_ready(kubectl, evil)
        api_port = int(cluster.server.rsplit(":", 1)[1])
        ports = [operator.metrics_port, operator.health_port, operator.api_port, api_port]
        targets = [
            f"/results/files/{result['path']}?ref={result['commit']}",
            "/results/runs",
            f"/logs/{a}/work",
            paths.file_path(a, result["path"]),
            paths.run_log_path(a, "work"),
            f"{paths.repository_path(a, 'git')}/info/refs?service=git-upload-pack",
            "/metrics",
        ]
        printed = _probe(kubectl, evil, ports, targets)
        assert len(printed) == len(ports) * 2 * len(targets), printed
        reached = [line for line in printed if not line.endswith(" REFUSED")]
        assert reached == [], reached
        assert tenants["secret"][a] not in "\n".join(printed)
    finally:
        kubectl("delete", "namespace", evil, "--wait=false", check=False)


def test_a_policy_that_allows_the_metrics_port_lets_the_kernel_reach_it_and_nothing_else(
    _session_kubectl, operator, cluster
) -> None:  # type: ignore[no-untyped-def]
    """NetworkPolicies are additive: a second one in the namespace opening the operator's metrics port
    to its gateway is enforced too (so the refusals above are the policy's doing, not a dead port)."""
    kubectl = _session_kubectl
    _egress_enforced(kubectl)
    ns = _namespace(kubectl, "lax")
    try:
        wait_env_ready(kubectl, ns)
        metrics = operator.metrics_port
        opening = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "metrics"},
            "spec": {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "127.0.0.1/32"}}], "ports": [{"port": metrics}]}],
            },
        }
        kubectl.apply(opening, namespace=ns)
        api_port = int(cluster.server.rsplit(":", 1)[1])
        ports = [metrics, operator.health_port, operator.api_port, api_port]
        printed = _probe(kubectl, ns, ports, ["/metrics"], wait_for=f"http://127.0.0.1:{metrics}/metrics")
        by_url = dict(line.split(" ", 1) for line in printed)
        assert by_url[f"http://127.0.0.1:{metrics}/metrics"].startswith("200 ")
        assert "nbkube_build_info" in by_url[f"http://127.0.0.1:{metrics}/metrics"]
        assert by_url[f"https://127.0.0.1:{metrics}/metrics"] != "REFUSED"  # reached: not TLS there
        for port in ports[1:]:
            for scheme in ("http", "https"):
                assert by_url[f"{scheme}://127.0.0.1:{port}/metrics"] == "REFUSED", printed
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_a_forged_run_name_never_reaches_the_operators_api_client(
    tenants: dict[str, Any], cluster: Any, _session_kubectl: Any
) -> None:  # type: ignore[no-untyped-def]
    kubectl = _session_kubectl
    kubectl("create", "secret", "generic", "db", "--from-literal=password=hunter2", namespace="kube-system")
    try:
        admin = ApiUser.admin(cluster)
        a = tenants["a"]
        answers = []
        for target in ("db", "no-such-secret"):  # an existing and a missing secret answer alike
            forged = f"..%2F..%2F..%2Fapi%2Fv1%2Fnamespaces%2Fkube-system%2Fsecrets%2F{target}"
            status, body = admin.get(f"{paths.PREFIX}/namespaces/{a}/notebookruns/{forged}/log")
            assert status in (400, 404), (status, body[:200])
            assert b"hunter2" not in body
            answers.append((status, body.replace(target.encode(), b"<name>")))
        assert answers[0] == answers[1]
        status, _ = admin.get(f"{paths.PREFIX}/namespaces/{a}/notebookruns/x%3Fwatch=true/log")
        assert status in (400, 404)
    finally:
        kubectl("delete", "secret", "db", namespace="kube-system", check=False)


def test_sixteen_log_followers_stall_no_tenants_status_updates(
    tenants: dict[str, Any], _session_kubectl
) -> None:  # type: ignore[no-untyped-def]
    """Issue 11's flood: sixteen followers of a long run's log (eight per user, the per-user cap) hold
    their streams while another tenant's run starts, runs and finishes: the followers have their own
    connections to the API server, never the operator's, so no status write waits behind them."""
    kubectl = _session_kubectl
    a, b = tenants["a"], tenants["b"]
    ticks = "import time\nfor i in range(600):\n    print('tick', i, flush=True)\n    time.sleep(0.1)"
    kubectl.apply(run("long", [ticks]), namespace=a)
    followers = [tenants["users"][kind] for kind in ("token", "certificate") for _ in range(8)]
    opened = threading.Barrier(len(followers) + 1, timeout=120)
    seen: list[int] = [0] * len(followers)
    stop = threading.Event()

    def follow(index: int, user: ApiUser) -> None:
        events = user.log_events(a, "long", follow=True)
        try:
            for event in events:
                if event.get("event") == "output":
                    if seen[index] == 0:
                        opened.wait()
                    seen[index] += 1
                if stop.is_set():
                    break
        finally:
            events.close()

    threads = [threading.Thread(target=follow, args=(i, u), daemon=True) for i, u in enumerate(followers)]
    for thread in threads:
        thread.start()
    opened.wait()  # every follower is streaming the long run's outputs
    kubectl.apply(run("meanwhile", ["print('quick')"]), namespace=b)
    finished = wait_run_finished(kubectl, b, "meanwhile", timeout=120)
    assert finished["status"]["state"] == "Succeeded", json.dumps(finished["status"])
    assert all(count > 0 for count in seen)  # and the followers still had their streams
    stop.set()
    kubectl("patch", "nbrun", "long", "--type=merge", "-p", '{"spec":{"cancel":true}}', namespace=a)
    for thread in threads:
        thread.join(60)
