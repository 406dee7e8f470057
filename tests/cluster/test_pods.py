"""The node agent runs pods as local processes with real pod status, env, probes, restarts and deletion."""

from __future__ import annotations

import ipaddress
import json
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from nbkube_testenv.cluster import ClusterInfo
from nbkube_testenv.pytest_plugin import Kubectl
from nbkube_testenv.storage import claim, host_path_volume
from nbkube_testenv.wait import wait_for

PY = Path(sys.executable).name  # resolved through the node agent's PATH, which puts the venv first


def pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers, "terminationGracePeriodSeconds": 5, **spec},
    }


def get_pod(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return kubectl.json("get", "pod", name, namespace=namespace)


def pid_of(status: dict[str, Any]) -> int:
    return int(status["containerID"].removeprefix("nbkube://"))


def condition(pod: dict[str, Any], ctype: str) -> str | None:
    return next((c["status"] for c in pod["status"].get("conditions", []) if c["type"] == ctype), None)


def pod_in_phase(kubectl: Kubectl, namespace: str, name: str, phase: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        pod = get_pod(kubectl, namespace, name)
        return pod if pod["status"].get("phase") == phase else None

    return wait_for(check, f"pod {namespace}/{name} in phase {phase}")


def test_deployment_pod_serves_http_at_its_pod_ip_and_ends_when_the_deployment_is_deleted(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    (tmp_path / "hello.txt").write_text("hello from a pod process\n")
    container = {
        "name": "web",
        "image": "python:3.11",
        "command": [PY, "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "workingDir": str(tmp_path),
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"port": "http", "path": "/hello.txt"}, "periodSeconds": 1},
    }
    kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
            },
        },
        namespace=namespace,
    )
    kubectl("wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=120s", namespace=namespace)
    pod = kubectl.json("get", "pods", "-l", "app=web", namespace=namespace)["items"][0]
    pod_ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(cluster.pod_subnet)
    assert pod["status"]["podIPs"] == [{"ip": pod_ip}]
    assert pod["status"]["hostIP"] == "127.0.0.1"
    with urllib.request.urlopen(f"http://{pod_ip}:8080/hello.txt", timeout=10) as resp:
        assert resp.read() == b"hello from a pod process\n"
    pid = pid_of(pod["status"]["containerStatuses"][0])
    process = psutil.Process(pid)
    assert process.cwd() == str(tmp_path)
    assert "http.server" in process.cmdline()

    kubectl("delete", "deployment", "web", "--wait=false", namespace=namespace)
    wait_for(lambda: not process.is_running(), f"pod process {pid} to end after the Deployment was deleted")
    wait_for(
        lambda: not kubectl.json("get", "pods", "-l", "app=web", namespace=namespace)["items"],
        "the Deployment's pods to be removed",
    )


@pytest.mark.parametrize(
    ("policy", "exit_code", "phase", "restarts"),
    [
        ("Never", 3, "Failed", False),
        ("OnFailure", 3, "Running", True),
        ("Always", 3, "Running", True),
        ("OnFailure", 0, "Succeeded", False),
    ],
)
def test_exiting_container_reports_its_exit_code_and_restarts_per_restart_policy(
    namespace: str, kubectl: Kubectl, policy: str, exit_code: int, phase: str, restarts: bool
) -> None:
    container = {"name": "main", "image": "none", "command": [PY, "-c", f"import sys; sys.exit({exit_code})"]}
    kubectl.apply(pod_manifest("exits", [container], restartPolicy=policy), namespace=namespace)
    if restarts:

        def restarted_twice() -> dict[str, Any] | None:
            pod = get_pod(kubectl, namespace, "exits")
            statuses = pod["status"].get("containerStatuses", [])
            return pod if statuses and statuses[0]["restartCount"] >= 2 else None

        pod = wait_for(restarted_twice, "two restarts")
        status = pod["status"]["containerStatuses"][0]
        assert status["lastState"]["terminated"]["exitCode"] == exit_code
        assert status["lastState"]["terminated"]["reason"] == "Error"
    else:
        pod = pod_in_phase(kubectl, namespace, "exits", phase)
        status = pod["status"]["containerStatuses"][0]
        assert status["restartCount"] == 0
        assert status["state"]["terminated"]["exitCode"] == exit_code
        assert status["state"]["terminated"]["reason"] == ("Completed" if exit_code == 0 else "Error")
    assert pod["status"]["phase"] == phase


def test_env_from_field_refs_secrets_and_config_maps_reaches_the_process(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl
) -> None:
    kubectl("create", "secret", "generic", "creds", "--from-literal=token=s3cret", namespace=namespace)
    kubectl(
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
        "--from-literal=level=7",
        namespace=namespace,
    )
    names = ["POD_NAME", "POD_NAMESPACE", "POD_IP", "NODE", "TOKEN", "MODE", "CFG_level", "GREETING", "PLAIN"]
    script = f"import json, os; print(json.dumps({{k: os.environ.get(k) for k in {names!r}}}))"
    container = {
        "name": "main",
        "image": "none",
        "command": [PY, "-c", script],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
            {"name": "GREETING", "value": "hi $(POD_NAME)"},
            {"name": "PLAIN", "value": "x"},
        ],
    }
    kubectl.apply(pod_manifest("envy", [container], restartPolicy="Never"), namespace=namespace)
    pod = pod_in_phase(kubectl, namespace, "envy", "Succeeded")
    seen = json.loads(cluster.container_log(namespace, "envy", "main").read_text().strip().splitlines()[-1])
    assert seen == {
        "POD_NAME": "envy",
        "POD_NAMESPACE": namespace,
        "POD_IP": pod["status"]["podIP"],
        "NODE": cluster.node_name,
        "TOKEN": "s3cret",
        "MODE": "fast",
        "CFG_level": "7",
        "GREETING": "hi envy",
        "PLAIN": "x",
    }


READINESS_SERVER = textwrap.dedent(
    """
    import os, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ready = os.path.exists("go")
            if self.headers.get("X-Probe") == "readiness":
                print("accepted a probe" if ready else "refused a probe", flush=True)
            self.send_response(200 if ready else 503)
            self.end_headers()

    HTTPServer((os.environ["POD_IP"], 8080), Handler).serve_forever()
    """
)


def test_readiness_probe_gates_the_ready_condition(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    (tmp_path / "server.py").write_text(READINESS_SERVER)
    container = {
        "name": "main",
        "image": "none",
        "command": [PY, "-u", "server.py"],
        "workingDir": str(tmp_path),
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "readinessProbe": {
            "httpGet": {
                "port": 8080,
                "path": "/ready",
                "httpHeaders": [{"name": "X-Probe", "value": "readiness"}],
            },
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    }
    kubectl.apply(pod_manifest("gated", [container]), namespace=namespace)

    log = cluster.container_log(namespace, "gated", "main")
    wait_for(lambda: log.exists() and "refused a probe" in log.read_text(), "a refused readiness probe")
    # The server refuses readiness until `go` exists, so the probe cannot have succeeded yet.
    pod = get_pod(kubectl, namespace, "gated")
    assert pod["status"]["phase"] == "Running"
    assert condition(pod, "Ready") == "False"
    assert pod["status"]["containerStatuses"][0]["ready"] is False
    (tmp_path / "go").touch()
    kubectl("wait", "--for=condition=Ready", "pod/gated", "--timeout=120s", namespace=namespace)
    assert get_pod(kubectl, namespace, "gated")["status"]["containerStatuses"][0]["ready"] is True
    assert "accepted a probe" in log.read_text()


def test_tcp_socket_readiness_probe_marks_a_listening_container_ready(
    namespace: str, kubectl: Kubectl
) -> None:
    container = {
        "name": "main",
        "image": "none",
        "command": [
            PY,
            "-c",
            "import os, socket, time\n"
            "s = socket.create_server((os.environ['NBKUBE_POD_IP'], 9000))\n"
            "time.sleep(3600)",
        ],
        "readinessProbe": {"tcpSocket": {"port": 9000}, "periodSeconds": 1},
    }
    kubectl.apply(pod_manifest("listener", [container]), namespace=namespace)
    kubectl("wait", "--for=condition=Ready", "pod/listener", "--timeout=120s", namespace=namespace)


def test_init_containers_run_to_completion_in_order_before_the_main_container(
    namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    def step(name: str) -> dict[str, Any]:
        code = f"open('order.txt', 'a').write('{name}\\n')"
        return {"name": name, "image": "none", "command": [PY, "-c", code], "workingDir": str(tmp_path)}

    manifest = pod_manifest(
        "ordered", [step("main")], initContainers=[step("first"), step("second")], restartPolicy="Never"
    )
    kubectl.apply(manifest, namespace=namespace)
    pod = pod_in_phase(kubectl, namespace, "ordered", "Succeeded")
    assert (tmp_path / "order.txt").read_text() == "first\nsecond\nmain\n"
    assert [s["state"]["terminated"]["exitCode"] for s in pod["status"]["initContainerStatuses"]] == [0, 0]
    assert condition(pod, "Initialized") == "True"


def test_deleting_a_pod_sends_sigterm_then_removes_it(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl
) -> None:
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n    print('got SIGTERM', flush=True)\n    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('up', flush=True)\ntime.sleep(3600)"
    )
    container = {"name": "main", "image": "none", "command": [PY, "-c", code]}
    kubectl.apply(pod_manifest("graceful", [container]), namespace=namespace)
    pod = pod_in_phase(kubectl, namespace, "graceful", "Running")
    process = psutil.Process(pid_of(pod["status"]["containerStatuses"][0]))
    log = cluster.container_log(namespace, "graceful", "main")
    wait_for(lambda: "up" in log.read_text(), "the pod process to start")
    kubectl("delete", "pod", "graceful", "--timeout=120s", namespace=namespace)
    assert not process.is_running()
    assert "got SIGTERM" in log.read_text()
    assert kubectl("get", "pod", "graceful", namespace=namespace, check=False).returncode != 0


VOLUME_DUMP = """
import json, os, pathlib
out = {}
for var, path in sorted(os.environ.items()):
    if var.startswith("NBKUBE_VOLUME_"):
        root = pathlib.Path(path)
        out[var] = {str(f.relative_to(root)): f.read_text() for f in sorted(root.rglob("*")) if f.is_file()}
print(json.dumps(out))
"""


def test_volumes_are_materialised_and_named_by_env_vars(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl
) -> None:
    kubectl("create", "secret", "generic", "files", "--from-literal=password=pw", namespace=namespace)
    kubectl("create", "configmap", "conf", "--from-literal=app.ini=[app]", namespace=namespace)
    container = {"name": "main", "image": "none", "command": [PY, "-c", VOLUME_DUMP]}
    volumes = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "creds", "secret": {"secretName": "files"}},
        {"name": "app-conf", "configMap": {"name": "conf", "items": [{"key": "app.ini", "path": "x/a.ini"}]}},
    ]
    manifest = pod_manifest("volumes", [container], volumes=volumes, restartPolicy="Never")
    kubectl.apply(manifest, namespace=namespace)
    pod_in_phase(kubectl, namespace, "volumes", "Succeeded")
    log = cluster.container_log(namespace, "volumes", "main")
    seen = json.loads(log.read_text().strip().splitlines()[-1])
    assert seen["NBKUBE_VOLUME_SCRATCH"] == {}
    assert seen["NBKUBE_VOLUME_CREDS"] == {"password": "pw"}
    assert seen["NBKUBE_VOLUME_APP_CONF"] == {"x/a.ini": "[app]"}
    # The ServiceAccount admission plugin adds the projected kube-api-access volume: a real bound token.
    (access,) = [v for k, v in seen.items() if k.startswith("NBKUBE_VOLUME_KUBE_API_ACCESS_")]
    assert access["namespace"] == namespace
    assert access["ca.crt"] == cluster.ca_file.read_text()
    review = kubectl.json(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": access["token"]},
            }
        ),
    )
    assert review["status"]["authenticated"] is True
    assert review["status"]["user"]["username"] == f"system:serviceaccount:{namespace}:default"


MOUNT_CHECK = """
import json, os, pathlib, sys
root = pathlib.Path(sys.argv[1])
def writable(path):
    try:
        (root / path / "probe").write_text("x")
        return True
    except OSError:
        return False
print(json.dumps({
    "csv": (root / "data" / "rows.csv").read_text(),
    "ini": (root / "conf" / "app.ini").read_text(),
    "png": (root / "conf" / "pixel.png").read_bytes().hex(),
    "single": (root / "single.ini").read_text(),
    "nested": (root / "scratch" / "inner" / "app.ini").read_text(),
    "data_writable": writable("data"),
    "conf_writable": writable("conf"),
    "scratch_writable": writable("scratch"),
}))
"""


def test_volumes_are_mounted_at_their_mount_path_read_only_where_asked(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "rows.csv").write_text("a,b\n1,2\n")
    pv_name = f"{namespace}-data"
    kubectl.apply(host_path_volume(pv_name, dataset, f"{namespace}-manual", "ReadWriteOnce"))
    try:
        kubectl.apply(claim("data", f"{namespace}-manual", "ReadWriteOnce"), namespace=namespace)
        wait_for(
            lambda: kubectl.json("get", "pvc", "data", namespace=namespace)["status"].get("phase") == "Bound",
            "the claim bound to its volume by the controller-manager",
        )
        pixel = bytes.fromhex("89504e470d0a1a0a0000000d49484452")
        (tmp_path / "pixel.png").write_bytes(pixel)
        kubectl(
            "create",
            "configmap",
            "conf",
            "--from-literal=app.ini=[app]",
            f"--from-file=pixel.png={tmp_path / 'pixel.png'}",
            namespace=namespace,
        )
        mounts = tmp_path / "mnt"
        container = {
            "name": "main",
            "image": "none",
            "command": [PY, "-c", MOUNT_CHECK, str(mounts)],
            "volumeMounts": [
                {"name": "data", "mountPath": str(mounts / "data"), "readOnly": True},
                {"name": "conf", "mountPath": str(mounts / "conf")},
                {"name": "scratch", "mountPath": str(mounts / "scratch")},
                {"name": "conf", "mountPath": str(mounts / "single.ini"), "subPath": "app.ini"},
                # nested in the scratch volume: its mount point is made in that volume, not on the host
                {"name": "conf", "mountPath": str(mounts / "scratch" / "inner")},
            ],
        }
        volumes = [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "conf", "configMap": {"name": "conf"}},
            {"name": "scratch", "emptyDir": {}},
        ]
        manifest = pod_manifest("mounts", [container], volumes=volumes, restartPolicy="Never")
        kubectl.apply(manifest, namespace=namespace)
        pod = pod_in_phase(kubectl, namespace, "mounts", "Succeeded")
        assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
        log = cluster.container_log(namespace, "mounts", "main")
        seen = json.loads(log.read_text().strip().splitlines()[-1])
        assert seen == {
            "csv": "a,b\n1,2\n",
            "ini": "[app]",
            "png": pixel.hex(),
            "single": "[app]",
            "nested": "[app]",
            "data_writable": False,
            "conf_writable": False,
            "scratch_writable": True,
        }
        # The mounts lived in the pod's own mount namespace: the host sees only the empty mount points.
        assert sorted(p.name for p in mounts.iterdir()) == ["conf", "data", "scratch", "single.ini"]
        assert list((mounts / "data").iterdir()) == []
        assert list((mounts / "scratch").iterdir()) == []
        assert list(dataset.iterdir()) == [dataset / "rows.csv"]
    finally:
        kubectl("delete", "pod", "mounts", "--ignore-not-found", "--wait=false", namespace=namespace)
        kubectl("delete", "pvc", "data", "--ignore-not-found", "--wait=false", namespace=namespace)
        kubectl("delete", "pv", pv_name, "--ignore-not-found", "--wait=false")


def test_a_host_path_that_another_volume_hides_is_still_mounted(
    cluster: ClusterInfo, namespace: str, kubectl: Kubectl, tmp_path: Path
) -> None:
    """As a dataset under the host's /tmp is once the pod's own /tmp is mounted: here an emptyDir at
    mnt/scratch hides the host's mnt/scratch/dataset, a hostPath volume mounted at mnt/data."""
    mounts = tmp_path / "mnt"
    dataset = mounts / "scratch" / "dataset"
    dataset.mkdir(parents=True)
    (dataset / "rows.csv").write_text("a,b\n1,2\n")
    script = (
        "import json, os, sys\nroot = sys.argv[1]\ncsv = open(root + '/data/rows.csv').read()\n"
        "print(json.dumps({'scratch': os.listdir(root + '/scratch'), 'csv': csv}))"
    )
    container = {
        "name": "main",
        "image": "none",
        "command": [PY, "-c", script, str(mounts)],
        "volumeMounts": [
            {"name": "scratch", "mountPath": str(mounts / "scratch")},
            {"name": "data", "mountPath": str(mounts / "data"), "readOnly": True},
        ],
    }
    volumes = [{"name": "scratch", "emptyDir": {}}, {"name": "data", "hostPath": {"path": str(dataset)}}]
    kubectl.apply(
        pod_manifest("hidden", [container], volumes=volumes, restartPolicy="Never"), namespace=namespace
    )
    pod = pod_in_phase(kubectl, namespace, "hidden", "Succeeded")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    seen = json.loads(cluster.container_log(namespace, "hidden", "main").read_text().strip().splitlines()[-1])
    assert seen == {"scratch": [], "csv": "a,b\n1,2\n"}


def test_a_volume_that_cannot_be_set_up_is_a_failed_mount_event_and_the_pod_waits(
    namespace: str, kubectl: Kubectl
) -> None:
    container = {"name": "main", "image": "none", "command": [PY, "-c", "print('never')"]}
    volumes = [{"name": "conf", "configMap": {"name": "no-such-config"}}]
    kubectl.apply(pod_manifest("stuck", [container], volumes=volumes), namespace=namespace)

    def failed_mount() -> list[dict[str, Any]]:
        events = kubectl.json(
            "get", "events", "--field-selector=involvedObject.name=stuck", namespace=namespace
        )["items"]
        return [e for e in events if e["reason"] == "FailedMount"]

    (event,) = wait_for(failed_mount, "a FailedMount event on the pod")
    assert event["type"] == "Warning"
    assert 'volume "conf"' in event["message"] and 'configmap "no-such-config" not found' in event["message"]
    pod = get_pod(kubectl, namespace, "stuck")
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
