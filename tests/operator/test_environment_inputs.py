"""What a NotebookEnvironment hands its kernels, on the local control plane with real kernels: a
dataset on a claim, ConfigMap files, env from Secrets and ConfigMaps (the secret's value nowhere but in
the kernel), placement and the pod-template overlay on the pods actually created, and bad input
refused or named where the user looks."""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import environment, get, run, wait_env_ready, wait_for, wait_run_finished
from kubernetes import client, watch
from nbkube_testenv.storage import claim, host_path_volume


def _gateway_pods(kubectl: Any, namespace: str, env: str) -> list[dict[str, Any]]:
    pods = kubectl.json("get", "pods", "-l", f"nbkube.io/environment={env}", namespace=namespace)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def _ready(env: dict[str, Any] | None) -> dict[str, Any]:
    conditions = ((env or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _wait_ready_message(kubectl: Any, namespace: str, name: str, needle: str, timeout: float = 90) -> dict:
    """The environment once its Ready condition is False with a message containing needle (a state
    that lasts until the cause is fixed, so checking it cannot miss it)."""

    def reached() -> dict[str, Any] | None:
        ready = _ready(get(kubectl, "nbenv", name, namespace))
        return ready if ready.get("status") == "False" and needle in ready.get("message", "") else None

    return wait_for(f"environment {namespace}/{name} Ready=False naming {needle!r}", reached, timeout)


def _watch_until(list_call: Any, what: str, predicate: Any, timeout: int = 90, **kwargs: Any) -> dict:
    """The first object a watch shows matching predicate; a watch without a resourceVersion starts with
    the objects as they are, so an object already there counts."""
    stream = watch.Watch()
    for event in stream.stream(list_call, timeout_seconds=timeout, **kwargs):
        obj = event["object"]
        if predicate(obj):
            stream.stop()
            return obj
    raise AssertionError(f"gave up watching for {what} after {timeout}s")


@pytest.fixture
def mount_root(namespace: str) -> Any:
    """A host directory for mount points: the node agent creates each mountPath on the host (the
    mounts themselves live in the pods' own mount namespaces). Outside /tmp and /home/nbkube, which are
    nbkube's own mounts in a gateway pod."""
    root = Path("/mnt") / f"nbkube-test-{namespace}"
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _cells_by_index(obj: dict[str, Any]) -> dict[int, str]:
    return {c["index"]: c.get("summary", "") for c in obj["status"]["cells"]}


def test_a_kernel_reads_a_claimed_dataset_config_map_files_and_env_given_by_reference(
    kubectl, namespace, operator, k8s_api, tmp_path, mount_root
):
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "rows.csv").write_text("name,value\na,1\nb,2\nc,3\n")
    storage_class = f"{namespace}-manual"
    pv_name = f"{namespace}-datasets"
    kubectl.apply(host_path_volume(pv_name, dataset, storage_class, "ReadOnlyMany"))
    try:
        kubectl.apply(claim("datasets", storage_class, "ReadOnlyMany"), namespace=namespace)
        core = client.CoreV1Api(k8s_api)
        _watch_until(
            core.list_namespaced_persistent_volume_claim,
            "the claim bound by the controller-manager",
            lambda pvc: pvc.status.phase == "Bound",
            namespace=namespace,
            field_selector="metadata.name=datasets",
        )
        token = secrets.token_hex(16)
        kubectl("create", "secret", "generic", "creds", f"--from-literal=token={token}", namespace=namespace)
        kubectl("create", "configmap", "settings", "--from-literal=mode=fast", namespace=namespace)
        kubectl("create", "configmap", "extra", "--from-literal=COLOR=blue", namespace=namespace)
        kubectl(
            "create",
            "configmap",
            "conf",
            "--from-literal=greeting.txt=hello from a ConfigMap",
            namespace=namespace,
        )
        data, conf, scratch = (str(mount_root / d) for d in ("data", "conf", "scratch"))
        kubectl.apply(
            environment(
                env=[
                    {"name": "MPLBACKEND", "value": "Agg"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                    {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
                envFrom=[
                    {"configMapRef": {"name": "extra"}, "prefix": "EXTRA_"},
                    {"secretRef": {"name": "creds"}, "prefix": "CREDS_"},
                ],
                volumes=[
                    {"name": "data", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
                    {"name": "conf", "configMap": {"name": "conf"}},
                    {"name": "scratch", "emptyDir": {}},
                ],
                volumeMounts=[
                    {"name": "data", "mountPath": data, "readOnly": True},
                    {"name": "conf", "mountPath": conf},
                    {"name": "scratch", "mountPath": scratch},
                ],
            ),
            namespace=namespace,
        )
        wait_env_ready(kubectl, namespace)
        cells = [
            f"import csv\nprint(sum(int(r['value']) for r in csv.DictReader(open('{data}/rows.csv'))))",
            f"print(open('{conf}/greeting.txt').read())",
            "import os\nprint(os.environ['MODE'], os.environ['EXTRA_COLOR'], os.environ['NODE'])",
            "import hashlib\n"
            "print(hashlib.sha256(os.environ['TOKEN'].encode()).hexdigest()[:16], "
            "hashlib.sha256(os.environ['CREDS_token'].encode()).hexdigest()[:16])",
            "def writable(path):\n"
            "    try:\n"
            "        open(path + '/probe', 'w').close()\n"
            "        return 'writable'\n"
            "    except OSError as e:\n"
            "        return type(e).__name__\n"
            f"print(writable('{data}'), writable('{scratch}'))",
            "print(os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))",
        ]
        kubectl.apply(run("inputs", cells), namespace=namespace)
        finished = wait_run_finished(kubectl, namespace, "inputs")
        assert finished["status"]["state"] == "Succeeded", json.dumps(finished["status"], indent=1)
        digest = hashlib.sha256(token.encode()).hexdigest()[:16]
        assert _cells_by_index(finished) == {
            0: "6",
            1: "hello from a ConfigMap",
            2: "fast blue nbkube-node",
            3: f"{digest} {digest}",
            4: "OSError writable",
            5: "False",
        }
        assert list(dataset.iterdir()) == [dataset / "rows.csv"]  # read-only: the probe was refused

        (pod,) = _gateway_pods(kubectl, namespace, "py")
        gateway = pod["spec"]["containers"][0]
        assert {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}} in gateway[
            "env"
        ]
        assert token not in json.dumps(pod)  # by reference only
        env = get(kubectl, "nbenv", "py", namespace)
        all_events = kubectl("get", "events", "-o", "json", namespace=namespace).stdout
        for where, text in (
            ("environment status", json.dumps(env["status"])),
            ("run status", json.dumps(finished["status"])),
            ("events", all_events),
            ("operator log", operator.log_path.read_text(errors="replace")),
        ):
            assert token not in text, f"the secret's value is in the {where}"
    finally:
        kubectl("delete", "nbenv", "py", "--ignore-not-found", "--wait=false", namespace=namespace)
        kubectl("delete", "pvc", "datasets", "--ignore-not-found", "--wait=false", namespace=namespace)
        kubectl("delete", "pv", pv_name, "--ignore-not-found", "--wait=false")


def test_placement_service_account_and_the_overlay_are_on_the_pods_created(kubectl, namespace, operator):
    priority = f"{namespace}-notebooks"
    kubectl.apply(
        {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": priority},
            "value": 1000,
        }
    )
    try:
        kubectl("create", "serviceaccount", "reader", namespace=namespace)
        tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        affinity = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["nbkube-node"]}
                            ]
                        }
                    ]
                }
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"nbkube.io/environment": "placed"}},
                        },
                    }
                ]
            },
        }
        overlay = {
            "metadata": {"labels": {"team": "ml"}, "annotations": {"example.com/cost-center": "42"}},
            "spec": {
                "containers": [{"name": "gateway", "env": [{"name": "FROM_OVERLAY", "value": "yes"}]}],
                "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["datasets.internal"]}],
                "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]},
            },
        }
        kubectl.apply(
            environment(
                "placed",
                tolerations=tolerations,
                affinity=affinity,
                priorityClassName=priority,
                imagePullSecrets=[{"name": "registry"}],
                serviceAccountName="reader",
                automountServiceAccountToken=True,
                resources={"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "2Gi"}},
                podTemplate=overlay,
            ),
            namespace=namespace,
        )
        wait_env_ready(kubectl, namespace, "placed")
        (pod,) = _gateway_pods(kubectl, namespace, "placed")
        spec = pod["spec"]
        assert tolerations[0] in spec["tolerations"]  # the API server adds its own not-ready/unreachable ones
        assert spec["affinity"] == affinity
        assert spec["priorityClassName"] == priority and spec["priority"] == 1000
        assert spec["imagePullSecrets"] == [{"name": "registry"}]
        assert spec["serviceAccountName"] == "reader" and spec["automountServiceAccountToken"] is True
        assert any(v["name"].startswith("kube-api-access-") for v in spec["volumes"])  # the opted-in token
        assert spec["hostAliases"] == overlay["spec"]["hostAliases"]
        assert spec["dnsConfig"] == overlay["spec"]["dnsConfig"]
        assert pod["metadata"]["labels"]["team"] == "ml"
        assert pod["metadata"]["labels"]["nbkube.io/environment"] == "placed"
        assert pod["metadata"]["annotations"]["example.com/cost-center"] == "42"
        gateway = next(c for c in spec["containers"] if c["name"] == "gateway")
        env = {e["name"]: e for e in gateway["env"]}
        assert env["FROM_OVERLAY"] == {"name": "FROM_OVERLAY", "value": "yes"}
        assert "secretKeyRef" in env["KG_AUTH_TOKEN"]["valueFrom"]
        assert gateway["resources"] == {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": "2Gi"},
        }
        assert spec["securityContext"]["runAsNonRoot"] is True

        cells = [
            "import os\nprint(os.environ['FROM_OVERLAY'])",
            "print(os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'))",
        ]
        kubectl.apply(run("placed-run", cells, env="placed"), namespace=namespace)
        finished = wait_run_finished(kubectl, namespace, "placed-run")
        assert finished["status"]["state"] == "Succeeded", json.dumps(finished["status"], indent=1)
        assert _cells_by_index(finished) == {0: "yes", 1: "True"}
    finally:
        kubectl("delete", "nbenv", "placed", "--ignore-not-found", "--wait=false", namespace=namespace)
        kubectl("delete", "priorityclass", priority, "--ignore-not-found", "--wait=false")


def test_a_kernel_sees_the_pods_resources_through_resource_field_refs_as_a_kubelet_gives_them(
    kubectl, namespace, operator
):
    def resource(name: str, ref: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"resourceFieldRef": ref}}

    env = [
        resource("MEMORY_LIMIT", {"resource": "limits.memory"}),
        resource("MEMORY_LIMIT_MI", {"resource": "limits.memory", "divisor": "1Mi"}),
        resource("CPU_REQUEST_M", {"containerName": "gateway", "resource": "requests.cpu", "divisor": "1m"}),
        resource("CPU_REQUEST", {"resource": "requests.cpu"}),  # 250m in cores, rounded up
        resource("CPU_LIMIT", {"resource": "limits.cpu"}),  # none set: the node's allocatable cpu
    ]
    resources = {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"memory": "1536Mi"}}
    kubectl.apply(environment("sized", env=env, resources=resources), namespace=namespace)
    wait_env_ready(kubectl, namespace, "sized")
    (pod,) = _gateway_pods(kubectl, namespace, "sized")
    gateway = next(c for c in pod["spec"]["containers"] if c["name"] == "gateway")
    # by reference: the node resolves them (the API server defaults an unset divisor to 0, meaning 1)
    for entry in env:
        ref = {"divisor": "0", **entry["valueFrom"]["resourceFieldRef"]}
        assert {"name": entry["name"], "valueFrom": {"resourceFieldRef": ref}} in gateway["env"], gateway[
            "env"
        ]
    allocatable_cpu = kubectl.json("get", "node", pod["spec"]["nodeName"])["status"]["allocatable"]["cpu"]

    names = [e["name"] for e in env]
    kubectl.apply(
        run("sized-run", [f"import os\nprint(*(os.environ[n] for n in {names!r}))"], env="sized"),
        namespace=namespace,
    )
    finished = wait_run_finished(kubectl, namespace, "sized-run")
    assert finished["status"]["state"] == "Succeeded", json.dumps(finished["status"], indent=1)
    assert _cells_by_index(finished)[0] == f"{1536 * 2**20} 1536 250 1 {allocatable_cpu}"


def test_a_gpu_no_node_has_leaves_the_pod_pending_and_the_condition_says_why(kubectl, namespace, operator):
    kubectl.apply(
        environment(
            "gpu",
            resources={"limits": {"nvidia.com/gpu": 1}},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
        namespace=namespace,
    )
    ready = _wait_ready_message(kubectl, namespace, "gpu", "Insufficient nvidia.com/gpu")
    assert ready["reason"] == "GatewaysNotReady"
    assert "is not scheduled" in ready["message"]
    (pod,) = _gateway_pods(kubectl, namespace, "gpu")
    assert pod["status"]["phase"] == "Pending"
    gateway = pod["spec"]["containers"][0]
    # Kubernetes fills requests in from the limits of a resource that cannot be overcommitted.
    assert gateway["resources"] == {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}


MISSING = [
    (
        "a ConfigMap of a volume",
        {"volumes": [{"name": "conf", "configMap": {"name": "nowhere"}}], "volumeMounts": []},
        'configmap "nowhere" not found',
    ),
    (
        "a Secret key of an env var",
        {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "nowhere", "key": "token"}}}]},
        'secret "nowhere" not found',
    ),
    (
        "a claim",
        {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "nowhere"}}]},
        'persistentvolumeclaim "nowhere" not found',
    ),
]


@pytest.mark.parametrize(("case", "spec", "needle"), MISSING, ids=[m[0] for m in MISSING])
def test_a_missing_reference_is_named_in_the_ready_condition(
    kubectl, namespace, operator, case, spec, needle
):
    kubectl.apply(environment("missing", **spec), namespace=namespace)
    ready = _wait_ready_message(kubectl, namespace, "missing", needle)
    assert ready["reason"] == "GatewaysNotReady", ready


def test_the_environment_starts_once_its_missing_config_map_exists(kubectl, namespace, operator, mount_root):
    conf = str(mount_root / "conf")
    spec = {
        "volumes": [{"name": "conf", "configMap": {"name": "late"}}],
        "volumeMounts": [{"name": "conf", "mountPath": conf}],
    }
    kubectl.apply(environment("late", **spec), namespace=namespace)
    _wait_ready_message(kubectl, namespace, "late", 'configmap "late" not found')
    kubectl("create", "configmap", "late", "--from-literal=a.txt=arrived", namespace=namespace)
    wait_env_ready(kubectl, namespace, "late")
    kubectl.apply(run("late-run", [f"print(open('{conf}/a.txt').read())"], env="late"), namespace=namespace)
    finished = wait_run_finished(kubectl, namespace, "late-run")
    assert _cells_by_index(finished) == {0: "arrived"}


BAD_OVERLAYS = [
    ("host network", {"hostNetwork": True}, "spec.podTemplate.spec.hostNetwork may not be set"),
    (
        "the gateway's command",
        {"containers": [{"name": "gateway", "command": ["sh", "-c", "env"]}]},
        "spec.podTemplate.spec.containers[gateway].command is nbkube's",
    ),
    ("a token", {"automountServiceAccountToken": True}, "spec.podTemplate.spec.automountServiceAccountToken"),
    (
        "a field of the wrong type",
        {"terminationGracePeriodSeconds": "soon"},
        "refused the gateway Deployment",
    ),
]


@pytest.mark.parametrize(("case", "overlay", "message"), BAD_OVERLAYS, ids=[b[0] for b in BAD_OVERLAYS])
def test_a_bad_overlay_is_invalid_spec_and_nothing_is_started(
    kubectl, namespace, operator, case, overlay, message
):
    kubectl.apply(environment("bad", podTemplate={"spec": overlay}), namespace=namespace)

    def invalid() -> dict[str, Any] | None:
        ready = _ready(get(kubectl, "nbenv", "bad", namespace))
        return ready if ready.get("reason") == "InvalidSpec" else None

    ready = wait_for("the environment refused as InvalidSpec", invalid, 60)
    assert ready["status"] == "False" and message in ready["message"], ready
    warnings = kubectl.json("get", "events", "--field-selector=reason=InvalidSpec", namespace=namespace)[
        "items"
    ]
    assert any(message in e["message"] for e in warnings)
    assert not _gateway_pods(kubectl, namespace, "bad")
    if "refused the gateway Deployment" not in message:  # refused before any child was made
        assert get(kubectl, "deployment", "bad-gateway", namespace) is None


REFUSED_BY_THE_API_SERVER = [
    (
        "a mountPath clashing with nbkube's /tmp",
        {"volumes": [{"name": "v", "emptyDir": {}}], "volumeMounts": [{"name": "v", "mountPath": "/tmp"}]},
        "would hide nbkube's own",
    ),
    (
        "two mounts at one path",
        {
            "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "emptyDir": {}}],
            "volumeMounts": [{"name": "a", "mountPath": "/data"}, {"name": "b", "mountPath": "/data"}],
        },
        "volumeMounts must have distinct mountPaths",
    ),
    ("a mount of no volume", {"volumeMounts": [{"name": "v", "mountPath": "/data"}]}, "must name a volume"),
    ("nbkube's volume prefix", {"volumes": [{"name": "nbkube-packages", "emptyDir": {}}]}, "nbkube's own"),
    ("the gateway token", {"env": [{"name": "KG_AUTH_TOKEN", "value": "x"}]}, "are set by nbkube"),
    ("a token with no ServiceAccount", {"automountServiceAccountToken": True}, "needs serviceAccountName"),
    ("a GPU in requests only", {"resources": {"requests": {"nvidia.com/gpu": 1}}}, "are set in limits"),
    (
        "a cpu resourceFieldRef in bytes",
        {
            "env": [
                {"name": "C", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}}}
            ]
        },
        "divisor is one of 1m, 1 for cpu",
    ),
    (
        "a resourceFieldRef of no compute resource",
        {"env": [{"name": "G", "valueFrom": {"resourceFieldRef": {"resource": "limits.nvidia.com/gpu"}}}]},
        "should match",
    ),
]


@pytest.mark.parametrize(
    ("case", "spec", "message"), REFUSED_BY_THE_API_SERVER, ids=[r[0] for r in REFUSED_BY_THE_API_SERVER]
)
def test_the_api_server_refuses_bad_inputs(kubectl, namespace, operator, case, spec, message):
    done = kubectl.apply(environment("refused", **spec), namespace=namespace, check=False)
    assert done.returncode != 0, f"{case} was accepted"
    assert message in done.stderr, done.stderr
